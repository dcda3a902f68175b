"""The embedded default: a synthetic dermatology-like dataset with a real fairness gap.

Target task (binary, "malignant"): a lesion on skin of one of several tones. The label depends on
border irregularity and colour variegation, drawn from overlapping distributions so the task is
learnable but not trivially separable. The darkest tone is a small minority whose lesions have
lower contrast, and in the majority tones a spurious artefact (an ink marker in a corner) is
correlated with the label; in the minority it is not. High-capacity fine-tuning therefore fits the
training set of every group while generalising worse on the minority: the fairness generalisation
gap of docs/design.md#the-embedded-synthetic-dataset. The training split is small (about 300
images by default, 50 of the minority), so that fine-tuning fits it within a few epochs; the
validation and test splits get extra, minority-enriched images (``val_samples``, ``test_samples``),
so that the minority's metrics are measured with narrow intervals at no training cost.
benchmarks/fairness_regime.py measures the regime.

Source task (4 classes, for pre-training the micro backbone): round or spiky border times uniform
or variegated colour, on the same skin tones, balanced across tones, without the artefact.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fairtune_ray.config import SyntheticConfig
from fairtune_ray.data.manifest import DatasetInfo, write_packed_dataset
from fairtune_ray.data.packed import load_packed_dataset, PackedDataset
from fairtune_ray.data.splits import assign_splits

TONES_RGB = np.array([  # light to dark, roughly Fitzpatrick I-II .. V-VI
    [236, 204, 180], [214, 170, 140], [186, 138, 104], [150, 105, 75], [118, 80, 56], [86, 58, 42],
], dtype=np.float32) / 255.0
# Lesion colours are relative to the skin they sit on (multiplicative), so that the contrast
# parameter, not the tone itself, decides how visible a lesion is.
LESION_REL = np.array([0.42, 0.30, 0.24], dtype=np.float32)
VARIEGATION_REL = np.array([[0.10, 0.08, 0.08], [0.85, 0.25, 0.22], [0.45, 0.50, 0.80]], dtype=np.float32)
ARTEFACT_RGB = np.array([110, 40, 150], dtype=np.float32) / 255.0  # purple surgical-marker ink
SUPERSAMPLE = 2
GENERATOR_VERSION = 3
RENDER_CHUNK = 1000  # images rendered at once (supersampled float tensors); part of the random stream


def tone_names(n: int) -> dict[int, str]:
    if n == 3:
        return {0: "light", 1: "medium", 2: "dark"}
    return {k: f"tone{k + 1}" for k in range(n)}


def _tone_palette(n: int) -> np.ndarray:
    idx = np.round(np.linspace(0, len(TONES_RGB) - 1, n)).astype(int)
    return TONES_RGB[idx]


def _tone_probabilities(n: int, minority_fraction: float) -> np.ndarray:
    """The darkest tone is the minority; the others share the rest, lighter tones more often."""
    w = np.arange(n - 1, 0, -1, dtype=np.float64)
    p = (1.0 - minority_fraction) * w / w.sum()
    return np.append(p, minority_fraction)


def _smooth_field(rng: np.random.Generator, n: int, size: int, cells: int = 4) -> torch.Tensor:
    """Low-frequency random fields in [0, 1], shape (n, size, size)."""
    coarse = torch.from_numpy(rng.random((n, 1, cells, cells), dtype=np.float32))
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)[:, 0]


def _render(rng: np.random.Generator, size: int, tone_rgb: np.ndarray, radius_fn, colour: torch.Tensor,
            contrast: np.ndarray, artefact: np.ndarray) -> np.ndarray:
    """Render N images (N, size, size, 3) uint8 from per-image polar radius functions and colours.

    ``radius_fn(theta)`` gives the border radius (fraction of the image) per image and pixel angle;
    ``colour`` is (N, 3, S, S) lesion colour relative to the skin, at supersampled resolution.
    """
    n = len(tone_rgb)
    s = size * SUPERSAMPLE
    yy, xx = torch.meshgrid(torch.linspace(-0.5, 0.5, s), torch.linspace(-0.5, 0.5, s), indexing="ij")
    centre = torch.from_numpy(rng.uniform(-0.08, 0.08, (n, 2, 1, 1)).astype(np.float32))
    dx, dy = xx[None] - centre[:, 0], yy[None] - centre[:, 1]
    r, theta = torch.sqrt(dx ** 2 + dy ** 2), torch.atan2(dy, dx)
    border = radius_fn(theta)
    inside = torch.sigmoid((border - r) * s * 1.5)  # soft edge over ~1 pixel
    bg = torch.from_numpy(tone_rgb)[:, :, None, None].expand(n, 3, s, s).clone()
    bg = bg * (0.92 + 0.16 * _smooth_field(rng, n, s, 6)[:, None])  # uneven illumination / skin texture
    c = torch.from_numpy(contrast.astype(np.float32))[:, None, None, None]
    lesion = bg * (1 - c) + bg * colour * c
    img = bg * (1 - inside[:, None]) + lesion * inside[:, None]
    if artefact.any():  # a marker stroke in a random corner
        corner = rng.integers(0, 4, n)
        ax = torch.from_numpy(np.where(corner % 2 == 0, -0.40, 0.40).astype(np.float32))[:, None, None]
        ay = torch.from_numpy(np.where(corner < 2, -0.40, 0.40).astype(np.float32))[:, None, None]
        mark = ((xx[None] - ax).abs() < 0.07) & ((yy[None] - ay).abs() < 0.025)
        mark = mark & torch.from_numpy(artefact)[:, None, None]
        ink = torch.from_numpy(ARTEFACT_RGB)[None, :, None, None]
        img = torch.where(mark[:, None], ink.expand_as(img), img)
    img = F.avg_pool2d(img, SUPERSAMPLE)
    img = img + torch.from_numpy(rng.normal(0, 0.03, img.shape).astype(np.float32))
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _target_features(rng: np.random.Generator, cfg: SyntheticConfig, tone: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image label and appearance parameters for images of the given tones."""
    n, minority = len(tone), tone == cfg.n_skin_tones - 1
    y = (rng.random(n) < 0.35).astype(np.int64)
    # Features from overlapping class-conditional distributions: learnable, not separable.
    # ``class_separation`` scales the gap between the class means (benign means fixed).
    sep = cfg.class_separation
    irregular = np.clip(rng.normal(np.where(y == 1, 0.045 + 0.065 * sep, 0.045), 0.035), 0.0, 0.25)
    variegation = np.clip(rng.normal(np.where(y == 1, 0.2 + 0.35 * sep, 0.2), 0.18), 0.0, 1.0)
    if cfg.label_noise > 0:
        flip = rng.random(n) < cfg.label_noise
        y = np.where(flip, 1 - y, y)
    contrast = np.where(minority, 0.85 * cfg.minority_contrast, 0.85) * rng.uniform(0.85, 1.0, n)
    p_art = np.where(minority, 0.5, np.where(y == 1, cfg.artefact_strength, 1 - cfg.artefact_strength))
    artefact = rng.random(n) < p_art
    return {"label": y, "irregular": irregular, "variegation": variegation, "contrast": contrast, "artefact": artefact}


def _render_target(rng: np.random.Generator, cfg: SyntheticConfig, tone: np.ndarray, f: dict[str, np.ndarray]) -> np.ndarray:
    """Images (N, S, S, 3) uint8 for the features of :func:`_target_features`."""
    n = len(tone)
    r0 = rng.uniform(0.16, 0.26, n).astype(np.float32)[:, None, None]
    harmonics = np.arange(2, 8, dtype=np.float32)
    amps = (rng.dirichlet(np.ones(len(harmonics)), n) * f["irregular"][:, None] * 2.2).astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, (n, len(harmonics))).astype(np.float32)

    def radius_fn(theta: torch.Tensor) -> torch.Tensor:
        out = torch.ones_like(theta)
        for j, h in enumerate(harmonics):
            out = out + torch.from_numpy(amps[:, j])[:, None, None] * torch.cos(h * theta + torch.from_numpy(phases[:, j])[:, None, None])
        return torch.from_numpy(r0) * out

    s = cfg.image_size * SUPERSAMPLE
    base = torch.from_numpy(LESION_REL)[None, :, None, None].expand(n, 3, s, s)
    which = torch.from_numpy(rng.integers(0, len(VARIEGATION_REL), n))
    other = torch.from_numpy(VARIEGATION_REL)[which][:, :, None, None]
    field = _smooth_field(rng, n, s, 5)[:, None]
    v = torch.from_numpy(f["variegation"].astype(np.float32))[:, None, None, None]
    colour = base * (1 - v * field) + other * (v * field)
    return _render(rng, cfg.image_size, _tone_palette(cfg.n_skin_tones)[tone], radius_fn, colour, f["contrast"], f["artefact"])


def _target_block(rng: np.random.Generator, cfg: SyntheticConfig, tone: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Features and images for images of the given tones, rendered in chunks (bounded memory)."""
    features = _target_features(rng, cfg, tone)
    images = [_render_target(rng, cfg, tone[i:i + RENDER_CHUNK], {k: v[i:i + RENDER_CHUNK] for k, v in features.items()})
              for i in range(0, len(tone), RENDER_CHUNK)]
    features["sex"] = rng.integers(0, 2, len(tone))
    return features, (np.concatenate(images) if images else np.zeros((0, cfg.image_size, cfg.image_size, 3), np.uint8))


def generate_target(cfg: SyntheticConfig) -> tuple[pd.DataFrame, np.ndarray, DatasetInfo]:
    """The fairness benchmark: manifest rows, (N, S, S, 3) uint8 images and code mappings.

    The base set, ``n_samples`` images (one to three per patient, ``minority_fraction`` of them in the
    minority tone), is split 60/20/20 train/val/test by patient. Then ``val_samples`` and ``test_samples``
    more images, one per new patient with ``eval_minority_fraction`` of them in the minority, join the
    validation and test splits. The extra images come from their own random stream, so the base set
    (the training split included) does not depend on how many there are.
    """
    rng = np.random.default_rng(cfg.seed)
    k, n_base, n_extra = cfg.n_skin_tones, cfg.n_samples, cfg.val_samples + cfg.test_samples
    tone = rng.choice(k, size=n_base, p=_tone_probabilities(k, cfg.minority_fraction))
    features, images = _target_block(rng, cfg, tone)
    # One to three lesions per patient in the base set, so its split has to be made by patient.
    patient = np.repeat(np.arange(n_base), rng.integers(1, 4, n_base))[:n_base]
    base = pd.DataFrame({"label": features["label"], "skin_tone": tone, "sex": features["sex"],
                         "artefact": features["artefact"], "patient_id": [f"P{p:05d}" for p in patient]})
    base["split"] = assign_splits(base, "patient_id", (0.6, 0.2, 0.2), seed=cfg.seed).to_numpy()
    parts, blocks = [base], [images]
    if n_extra:
        extra_rng = np.random.default_rng([cfg.seed, 1])
        eval_fraction = cfg.minority_fraction if cfg.eval_minority_fraction is None else cfg.eval_minority_fraction
        tone = extra_rng.choice(k, size=n_extra, p=_tone_probabilities(k, eval_fraction))
        features, images = _target_block(extra_rng, cfg, tone)
        parts.append(pd.DataFrame({
            "label": features["label"], "skin_tone": tone, "sex": features["sex"], "artefact": features["artefact"],
            "patient_id": [f"P{n_base + i:05d}" for i in range(n_extra)],
            "split": np.repeat(["val", "test"], [cfg.val_samples, cfg.test_samples])}))
        blocks.append(images)
    rows = pd.concat(parts, ignore_index=True)
    n = len(rows)
    manifest = pd.DataFrame({
        "sample_id": np.arange(n, dtype=np.int64),
        "image": [f"synthetic://target/{i}" for i in range(n)],
        "label": rows["label"].to_numpy(np.int64),
        "skin_tone": rows["skin_tone"].to_numpy(np.int64),
        "sex": rows["sex"].to_numpy(np.int64),
        "artefact": rows["artefact"].to_numpy(np.int64),
        "patient_id": rows["patient_id"],
        "split": rows["split"],
    })
    info = DatasetInfo(
        name="synthetic-derm",
        attributes={"skin_tone": tone_names(k), "sex": {0: "M", 1: "F"}, "artefact": {0: "no_marker", 1: "marker"}},
        label_names={0: "benign", 1: "malignant"},
        source="fairtune_ray.data.synthetic",
        extra={"config": cfg.model_dump(), "minority_group": tone_names(k)[k - 1]},
    )
    return manifest, np.concatenate(blocks), info


def generate_source(cfg: SyntheticConfig) -> tuple[pd.DataFrame, np.ndarray, DatasetInfo]:
    """The pre-training task: border shape x colour pattern (4 classes), balanced over tones.

    Different classes from the target, but the same kind of low-level evidence (borders, colour
    variation), as ImageNet features are for dermoscopy. No artefact.
    """
    rng = np.random.default_rng(cfg.seed + 1000)
    n, k = cfg.source_samples, cfg.n_skin_tones
    tone = rng.integers(0, k, n)
    cls = rng.integers(0, 4, n)
    spiky, varied = cls // 2, cls % 2
    r0 = rng.uniform(0.2, 0.3, n).astype(np.float32)[:, None, None]
    rot = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
    spikes = rng.integers(5, 9, n).astype(np.float32)[:, None, None]
    amp = torch.from_numpy(np.where(spiky == 1, rng.uniform(0.25, 0.4, n), 0.0).astype(np.float32))[:, None, None]

    def radius_fn(theta: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(r0) * (1.0 + amp * torch.cos(torch.from_numpy(spikes) * (theta + torch.from_numpy(rot))))

    s = cfg.image_size * SUPERSAMPLE
    variegation = np.where(varied == 1, rng.uniform(0.6, 0.9, n), rng.uniform(0.0, 0.1, n)).astype(np.float32)
    base = torch.from_numpy(LESION_REL)[None, :, None, None].expand(n, 3, s, s)
    other = torch.from_numpy(VARIEGATION_REL)[torch.from_numpy(rng.integers(0, 3, n))][:, :, None, None]
    field = _smooth_field(rng, n, s, 5)[:, None]
    v = torch.from_numpy(variegation)[:, None, None, None]
    colour = base * (1 - v * field) + other * (v * field)
    contrast = rng.uniform(0.55, 0.95, n)
    images = _render(rng, cfg.image_size, _tone_palette(k)[tone], radius_fn, colour, contrast, np.zeros(n, bool))
    manifest = pd.DataFrame({
        "sample_id": np.arange(n, dtype=np.int64),
        "image": [f"synthetic://source/{i}" for i in range(n)],
        "label": cls.astype(np.int64),
        "skin_tone": tone.astype(np.int64),
        "patient_id": [f"S{i:05d}" for i in range(n)],
    })
    manifest["split"] = assign_splits(manifest, "patient_id", (0.9, 0.1, 0.0), seed=cfg.seed).to_numpy()
    info = DatasetInfo(name="synthetic-source", attributes={"skin_tone": tone_names(k)},
                       label_names={0: "round_uniform", 1: "round_variegated", 2: "spiky_uniform", 3: "spiky_variegated"},
                       source="fairtune_ray.data.synthetic")
    return manifest, images, info


def config_hash(cfg: SyntheticConfig, kind: str) -> str:
    payload = json.dumps({"cfg": cfg.model_dump(), "kind": kind, "v": GENERATOR_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def ensure_synthetic(cfg: SyntheticConfig, cache_dir: str, kind: str = "target") -> str:
    """Generate the dataset into the cache once (keyed by its config) and return its folder."""
    path = Path(cache_dir) / "datasets" / f"synthetic-{kind}-{config_hash(cfg, kind)}"
    if (path / "manifest.parquet").exists():
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest, images, info = (generate_target if kind == "target" else generate_source)(cfg)
    try:
        write_packed_dataset(str(path), manifest, iter(images), info)
    except ValueError:
        if not (path / "manifest.parquet").exists():  # lost a race with another process: fine
            raise
    return str(path)


def load_synthetic(cfg: SyntheticConfig, cache_dir: str, kind: str = "target") -> PackedDataset:
    return load_packed_dataset(ensure_synthetic(cfg, cache_dir, kind))
