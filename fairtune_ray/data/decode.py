"""Decode images once, in worker processes, to square uint8 RGB arrays.

PIL (JPEG draft mode when the image is much larger than needed), grayscale and palette images
become RGB, the short side is resized to ``resize`` and the centre cropped to ``size`` x
``size``. Array images (npz fields, HDF5 slices, MRI volumes) are scaled to uint8 by their
adapter's reader first. Everything a worker runs is module-level, so it pickles under ``spawn``.
"""
from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from fairtune_ray.data.adapters.readers import scale_to_uint8

__all__ = ["to_rgb_array", "decode_one", "decode_images"]

Failures = list[tuple[int, str]]
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def _array_to_image(obj: Any) -> Image.Image:
    """An (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array of any dtype -> a PIL image."""
    arr = np.asarray(obj)
    if arr.dtype != np.uint8:
        arr = scale_to_uint8(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(arr), "L")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(arr), "RGB" if arr.shape[2] == 3 else "RGBA")
    raise ValueError(f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}")


def _as_image(obj: Any, resize: int) -> Image.Image:
    if not isinstance(obj, Image.Image):
        return _array_to_image(obj)
    img = obj
    if img.format == "JPEG":
        img.draft(None, (resize, resize))      # DCT-domain downscale, never below the target
    img = ImageOps.exif_transpose(img)
    if img.mode in _HIGH_BIT_MODES:
        img = Image.fromarray(scale_to_uint8(np.asarray(img, dtype=np.float32)), "L")
    return img


def to_rgb_array(obj: Any, size: int, resize: int) -> np.ndarray:
    """A reader's output (PIL image or array) -> (size, size, 3) uint8: short side to ``resize``,
    centre crop ``size``."""
    img = _as_image(obj, resize)
    if img.mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "LA", "PA") else img.convert("RGB")
    w, h = img.size
    scale = resize / min(w, h)
    nw, nh = max(resize, round(w * scale)), max(resize, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def decode_one(path: str, key: Optional[str], reader: Callable[..., Any], size: int, resize: int) -> np.ndarray:
    obj = reader(path, key)
    try:
        return to_rgb_array(obj, size, resize)
    finally:
        if isinstance(obj, Image.Image):
            obj.close()


def _decode_chunk(task: tuple) -> tuple[int, np.ndarray, Failures]:
    """Decode rows ``start ..`` of the manifest; failures are reported, not raised."""
    start, items, reader, size, resize = task
    out = np.zeros((len(items), size, size, 3), dtype=np.uint8)
    failures = []
    for i, (path, key) in enumerate(items):
        try:
            out[i] = decode_one(path, key, reader, size, resize)
        except Exception as err:  # unreadable, truncated, wrong format...
            failures.append((start + i, f"{type(err).__name__}: {err}"))
    return start, out, failures


class _Collector:
    """Puts decoded chunks into ``pixels``, gathers failures, advances the progress bar."""

    def __init__(self, pixels: np.ndarray, bar: tqdm) -> None:
        self.pixels, self.bar = pixels, bar
        self.failures: Failures = []

    def add(self, chunk: tuple[int, np.ndarray, Failures]) -> None:
        start, arr, fails = chunk
        self.pixels[start:start + len(arr)] = arr
        self.failures += fails
        self.bar.update(len(arr))


def _decode_in_pool(tasks: Iterable[tuple], workers: int, collect: _Collector) -> None:
    """At most ``2 * workers`` chunks in flight: decoded chunks are big."""
    ctx = multiprocessing.get_context("spawn")     # no fork of a process holding Arrow threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: set[Future] = set()
        try:
            for task in tasks:
                pending.add(pool.submit(_decode_chunk, task))
                if len(pending) >= 2 * workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        collect.add(fut.result())
            for fut in pending:
                collect.add(fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def decode_images(items: Sequence[tuple[str, Optional[str]]], reader: Callable[..., Any], size: int, resize: int,
                  pixels: np.ndarray, workers: int = 1, progress: bool = True) -> Failures:
    """Decode every item into ``pixels`` (an (N, size, size, 3) array or memmap) with a process
    pool; returns the (row, error) pairs that failed."""
    n = len(items)
    chunk = max(1, min(64, math.ceil(n / max(1, workers * 4))))
    tasks = ((s, list(items[s:s + chunk]), reader, size, resize) for s in range(0, n, chunk))
    bar = tqdm(total=n, desc="decoding images", unit="img", disable=not progress, dynamic_ncols=True)
    collect = _Collector(pixels, bar)
    try:
        if workers <= 1:
            for task in tasks:
                collect.add(_decode_chunk(task))
        else:
            _decode_in_pool(tasks, workers, collect)
    finally:
        bar.close()
    return sorted(collect.failures)
