"""Image readers: one picklable function per storage format, called in worker processes.

A reader takes the absolute path of a file and an optional member key (an HDF5 dataset name)
and returns either a lazily opened PIL image (so JPEG draft-mode decoding can be used) or a 2-D
/ 3-D numpy array already scaled to uint8. Readers with settings are bound with
``functools.partial`` so they pickle for ``ProcessPoolExecutor``.
"""
from __future__ import annotations

import gzip
import struct
from typing import Any, Optional

import numpy as np
from PIL import Image


def read_pil(path: str, key: Optional[str] = None) -> Image.Image:
    """Any format PIL opens (JPEG, PNG, GIF, TIFF...); decoding is deferred to the caller."""
    return Image.open(path)


def scale_to_uint8(arr: np.ndarray, vmin: Optional[float] = None, vmax: Optional[float] = None) -> np.ndarray:
    """Linearly map [vmin, vmax] to [0, 255] (default: the array's own 0.5-99.5 percentiles)."""
    if np.asarray(arr).dtype == np.uint8 and vmin is None and vmax is None:
        return np.asarray(arr)
    a = np.asarray(arr, dtype=np.float32)
    finite = a[np.isfinite(a)]
    if vmin is None or vmax is None:
        lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0))
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    if vmax <= vmin:
        vmax = vmin + 1.0
    out = (np.nan_to_num(a, nan=vmin) - vmin) * (255.0 / (vmax - vmin))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def read_npz_field(path: str, key: Optional[str] = None, *, field: str = "rnflt",
                   vmin: Optional[float] = None, vmax: Optional[float] = None) -> np.ndarray:
    """One array from an ``.npz`` (e.g. Harvard-GF's ``rnflt`` thickness map), scaled to uint8."""
    with np.load(path, allow_pickle=False) as data:
        if field not in data.files:
            raise KeyError(f"'{path}' has no field '{field}' (fields: {data.files})")
        arr = np.asarray(data[field])
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3):
        arr = arr[arr.shape[0] // 2]             # a volume: its middle slice
    if arr.dtype == np.uint8:
        return arr
    return scale_to_uint8(arr, vmin, vmax)


def read_array(path: str, key: Optional[str] = None, *, vmin: Optional[float] = None,
               vmax: Optional[float] = None) -> np.ndarray:
    """A 2-D array from ``.npy`` or from an HDF5 file's dataset ``key`` (needs h5py), scaled to uint8."""
    if path.lower().endswith((".h5", ".hdf5")):
        import h5py  # optional: only .h5 images need h5py; the adapter checks for it before decoding starts

        with h5py.File(path, "r") as f:
            arr = np.asarray(f[key][()])
    else:
        arr = np.load(path, allow_pickle=False)
    if arr.dtype == np.uint8:
        return arr
    return scale_to_uint8(arr, vmin, vmax)


# Analyze 7.5 (the .hdr/.img pairs of OASIS): header layout from the Mayo format specification.
_ANALYZE_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 512: "u2"}


def read_analyze_header(hdr_path: str) -> dict[str, Any]:
    with open(hdr_path, "rb") as f:
        raw = f.read(348)
    if len(raw) < 348:
        raise ValueError(f"'{hdr_path}' is not an Analyze header (only {len(raw)} bytes)")
    endian = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    if struct.unpack(endian + "i", raw[:4])[0] != 348:
        raise ValueError(f"'{hdr_path}' is not an Analyze header (sizeof_hdr != 348)")
    dims = struct.unpack(endian + "8h", raw[40:56])
    datatype = struct.unpack(endian + "h", raw[70:72])[0]
    vox_offset = struct.unpack(endian + "f", raw[108:112])[0]
    if datatype not in _ANALYZE_DTYPES:
        raise ValueError(f"'{hdr_path}': unsupported Analyze datatype {datatype}")
    ndim = max(1, min(int(dims[0]), 7))
    shape = tuple(int(d) for d in dims[1:1 + ndim])
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return {"endian": endian, "shape": shape, "dtype": np.dtype(endian + _ANALYZE_DTYPES[datatype]),
            "vox_offset": int(vox_offset)}


def read_analyze_volume(img_path: str) -> np.ndarray:
    """An Analyze 7.5 volume (x, y, z) from its ``.img`` (optionally ``.img.gz``) and ``.hdr``."""
    base = img_path[:-3] if img_path.endswith(".gz") else img_path
    hdr = read_analyze_header(base[:-4] + ".hdr")
    opener = gzip.open if img_path.endswith(".gz") else open
    with opener(img_path, "rb") as f:
        buf = f.read()
    n = int(np.prod(hdr["shape"]))
    data = np.frombuffer(buf, dtype=hdr["dtype"], count=n, offset=hdr["vox_offset"])
    return data.reshape(hdr["shape"], order="F")


def read_analyze_slice(path: str, key: Optional[str] = None, *, plane: str = "axial", index: int = 90) -> np.ndarray:
    """One slice of an Analyze volume, intensity-scaled to uint8.

    ``plane``: axial (fixed z), coronal (fixed y) or sagittal (fixed x), in the volume's stored
    axis order; OASIS's atlas-registered T88 images are stored x=left-right, y=anterior-posterior,
    z=inferior-superior, so axial index 90 is the slice of OASIS's own ``_tra_90`` snapshot.
    """
    vol = read_analyze_volume(path)
    if vol.ndim == 4:
        vol = vol[..., 0]
    axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
    if not 0 <= index < vol.shape[axis]:
        raise IndexError(f"slice {index} is outside the {plane} range 0..{vol.shape[axis] - 1} of '{path}'")
    sl = np.take(vol, index, axis=axis).T[::-1]       # rows top-to-bottom for viewing
    return scale_to_uint8(sl)
