"""From a prepared dataset to batches: uint8 slices of the image store, normalised on the device.

Packed shards hold uint8 pixels, so a trial's data are ready after one Parquet read (one fetch from
the Ray object store, or a memory map of the node's local copy); a batch is one gather of uint8
rows, and conversion to float, resizing to the model input and augmentation happen per batch, on
the training device.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from fairtune_ray.config import DataConfig
from fairtune_ray.data.groups import GroupCoding, attribute_list, coding_for, group_coding, require_attributes
from fairtune_ray.data.manifest import DataError, load_manifest, pixel_bytes
from fairtune_ray.data.packed import PackedDataset, load_packed_dataset
from fairtune_ray.data.pixels import ImageRows
from fairtune_ray.data.synthetic import load_synthetic


def load_dataset(cfg: DataConfig) -> PackedDataset:
    """The configured dataset: the embedded synthetic default or a prepared folder/URI, held in memory
    or memory-mapped as ``data.storage`` says (``storage_for``), with its groups (``data.sensitive_attribute``,
    small groups merged or refused by ``data.min_group_size`` / ``data.small_groups``) attached."""
    if cfg.source == "synthetic":
        data = load_synthetic(cfg.synthetic, cfg.cache_dir)
    else:
        manifest, info = load_manifest(cfg.source)
        data = load_packed_dataset(cfg.source, storage=storage_for(cfg, pixel_bytes(manifest, info)),
                                   local_root=cfg.local_dir)
    check_attribute(data, cfg.sensitive_attribute, where=cfg.source)
    groups = group_coding(data.manifest, data.info, cfg.sensitive_attribute, cfg.min_group_size, cfg.small_groups)
    return replace(data, groups=groups)


def storage_for(cfg: DataConfig, nbytes: int) -> str:
    """``data.storage``, with 'auto' resolved by the dataset's uncompressed size."""
    if cfg.storage != "auto":
        return cfg.storage
    return "memory" if nbytes <= cfg.memory_limit_mb * 2**20 else "mapped"


def check_attribute(data: PackedDataset, attribute: Union[str, Sequence[str]], where: str = "dataset") -> None:
    require_attributes(data.info, data.manifest.columns, attribute_list(attribute), where)
    for split in ("train", "val"):
        if not (data.manifest["split"] == split).any():
            raise DataError(f"{where}: the manifest has no '{split}' rows (column 'split')")


@dataclass
class SplitTensors:
    """One split: its images (uint8 (N, H, W, C) rows of the dataset's store, not copied), labels, groups."""

    images: ImageRows
    labels: torch.Tensor
    groups: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def image_tensor(self, index=slice(None)) -> torch.Tensor:
        """The images at ``index`` as a uint8 (n, C, H, W) tensor (gathered now, a view of that copy)."""
        return channels_first(self.images[index])


def channels_first(images: np.ndarray) -> torch.Tensor:
    """(n, H, W, C) uint8 -> a contiguous (n, C, H, W) tensor (a uint8 copy: cheap next to the model)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def split_tensors(data: PackedDataset, split: str, groups: Union[str, Sequence[str], GroupCoding]) -> SplitTensors:
    """One split's images, labels and group codes; ``groups``: a coding (``coding_for``), or the attribute(s),
    whose coding is the one attached to ``data`` or else their plain coding (data/groups.py)."""
    part = data.split(split)
    if isinstance(groups, str) and (data.groups is None or data.groups.attributes != (groups,)):
        codes = part.manifest[groups].to_numpy()  # one attribute, no coding attached: its codes
    else:
        codes = (groups if isinstance(groups, GroupCoding) else coding_for(groups, data)).encode(part.manifest)
    return SplitTensors(part.images, torch.tensor(part.manifest["label"].to_numpy(), dtype=torch.long),
                        torch.tensor(codes, dtype=torch.long))


class BatchGather(Dataset):
    """A split as a map-style dataset that serves whole batches: the DataLoader hands ``__getitems__``
    a batch's indices and gets back slices of uint8 images, labels and groups, gathered in one
    indexing operation each (no per-sample tensors, no collate). Samplers, sharding across workers
    (Accelerate) and pinning work as for any DataLoader."""

    def __init__(self, split: SplitTensors):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]):
        idx = np.asarray(indices, dtype=np.int64)
        t = torch.from_numpy(idx)
        return self.split.image_tensor(idx), self.split.labels[t], self.split.groups[t]


def whole_batch(batch):
    """The collate of ``BatchGather``: the batch is already assembled."""
    return batch


def group_balanced_weights(labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Sample weights that make every (group, label) cell equally likely."""
    cell = groups * (int(labels.max()) + 1) + labels
    counts = torch.bincount(cell).float()
    return 1.0 / counts[cell]


def make_loader(split: SplitTensors, batch_size: int, train: bool, group_balanced: bool = False,
                seed: int = 0) -> DataLoader:
    """Batches of uint8 images (pinned when a GPU will take them), shuffled or group-balanced for training."""
    gen = torch.Generator().manual_seed(seed)
    sampler = None
    if train and group_balanced:
        sampler = WeightedRandomSampler(group_balanced_weights(split.labels, split.groups), len(split), generator=gen)
    return DataLoader(BatchGather(split), batch_size=batch_size, shuffle=train and sampler is None,
                      sampler=sampler, generator=gen if train else None, drop_last=False, num_workers=0,
                      collate_fn=whole_batch, pin_memory=torch.cuda.is_available())


class BatchTransform:
    """uint8 batch -> normalised float at the model's input size, with flips when training.

    Mean, std and input size come from timm's data config of the backbone.
    """

    def __init__(self, data_config: dict, augment: bool):
        self.mean = torch.tensor(data_config["mean"]).view(1, -1, 1, 1)
        self.std = torch.tensor(data_config["std"]).view(1, -1, 1, 1)
        self.size = tuple(data_config["input_size"][-2:])
        self.augment = augment

    def __call__(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        x = images.float().div_(255.0)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        if train and self.augment:  # dermoscopy/fundus images have no canonical orientation
            flip_h = torch.rand(x.shape[0], device=x.device) < 0.5
            flip_v = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip_h[:, None, None, None], x.flip(-1), x)
            x = torch.where(flip_v[:, None, None, None], x.flip(-2), x)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)
