import numpy as np
import pytest

from fairtune_ray.config import SyntheticConfig
from fairtune_ray.data.manifest import DataError, validate_manifest, write_packed_dataset
from fairtune_ray.data.packed import load_packed_dataset
from fairtune_ray.data.synthetic import ensure_synthetic, generate_source, generate_target


def test_target_is_seeded_and_structured():
    cfg = SyntheticConfig(n_samples=1500, image_size=32, val_samples=0, test_samples=0)
    m1, im1, info = generate_target(cfg)
    m2, im2, _ = generate_target(cfg)
    assert np.array_equal(im1, im2) and m1.equals(m2)
    assert im1.shape == (1500, 32, 32, 3) and im1.dtype == np.uint8
    validate_manifest(m1, info)
    minority = cfg.n_skin_tones - 1
    frac = (m1.skin_tone == minority).mean()
    assert abs(frac - cfg.minority_fraction) < 0.04
    # The artefact follows the label in the majority tones only.
    maj, mino = m1[m1.skin_tone != minority], m1[m1.skin_tone == minority]
    corr_maj = np.corrcoef(maj.artefact, maj.label)[0, 1]
    corr_min = np.corrcoef(mino.artefact, mino.label)[0, 1]
    assert corr_maj > 0.5 and abs(corr_min) < 0.2


def test_minority_lesions_have_lower_contrast():
    cfg = SyntheticConfig(n_samples=800, val_samples=0, test_samples=0, minority_contrast=0.7)
    m, im, _ = generate_target(cfg)
    centre = im[:, 12:20, 12:20].astype(float).mean((1, 2, 3))
    corner = im[:, 1:6, 12:20].astype(float).mean((1, 2, 3))
    rel = (corner - centre) / corner  # relative darkening of the lesion against its skin
    minority = cfg.n_skin_tones - 1
    assert rel[m.skin_tone == minority].mean() < 0.8 * rel[m.skin_tone == 0].mean()


def test_extra_validation_and_test_images():
    """val_samples / test_samples join only their split, one new patient each, minority-enriched; the base
    set keeps its 60/20/20 patient split and does not depend on them."""
    cfg = SyntheticConfig(n_samples=400, val_samples=300, test_samples=1200, eval_minority_fraction=0.5, image_size=16)
    m, im, info = generate_target(cfg)
    validate_manifest(m, info)
    assert len(m) == len(im) == 1900 and m.sample_id.is_unique
    base, extra = m.iloc[:400], m.iloc[400:]
    assert list(extra.split) == ["val"] * 300 + ["test"] * 1200
    assert extra.patient_id.is_unique and not set(extra.patient_id) & set(base.patient_id)
    minority = cfg.n_skin_tones - 1
    assert abs((extra.skin_tone == minority).mean() - 0.5) < 0.05
    assert abs((base.skin_tone == minority).mean() - cfg.minority_fraction) < 0.05
    counts = m.split.value_counts()
    assert counts["val"] - 300 == (base.split == "val").sum() and counts["test"] - 1200 == (base.split == "test").sum()
    # The extra images have their own random stream: the base set, training split included, is unchanged.
    without, without_im, _ = generate_target(cfg.model_copy(update={"val_samples": 0, "test_samples": 0}))
    assert without.equals(base) and np.array_equal(without_im, im[:400])


def test_default_is_powered_for_the_minority():
    """The embedded default: ~300 training images (~50 of the minority, memorised by full fine-tuning)
    and enough minority images in validation and test for narrow worst-group intervals
    (benchmarks/fairness_regime.py). Tone counts do not depend on the image size."""
    cfg = SyntheticConfig(image_size=16)
    m, _, _ = generate_target(cfg)
    minority = m.skin_tone == cfg.n_skin_tones - 1
    per_split = m.groupby("split").size()
    minority_per_split = m[minority].groupby("split").size()
    assert 250 <= per_split["train"] <= 350 and 30 <= minority_per_split["train"] <= 70
    assert minority_per_split["val"] >= 120 and minority_per_split["test"] >= 600
    for split in ("val", "test"):  # the minority has both classes, so its AUC is defined
        assert m[minority & (m.split == split)].label.nunique() == 2


def test_patient_level_split_and_cache(tmp_path):
    cfg = SyntheticConfig(n_samples=300, source_samples=200, val_samples=40, test_samples=60)
    path = ensure_synthetic(cfg, str(tmp_path))
    assert ensure_synthetic(cfg, str(tmp_path)) == path  # cached, not regenerated
    d = load_packed_dataset(path)
    assert d.manifest.groupby("patient_id").split.nunique().max() == 1
    assert set(d.manifest.split) == {"train", "val", "test"}
    src_m, src_im, src_info = generate_source(cfg)
    assert set(src_m.label) == {0, 1, 2, 3} and len(src_info.label_names) == 4


def test_packed_write_is_atomic_and_shards_by_size(tmp_path):
    """A failed write (mixed image sizes) leaves the previous output whole and no staging folder."""
    cfg = SyntheticConfig(n_samples=60, image_size=16, val_samples=0, test_samples=0)
    manifest, images, info = generate_target(cfg)
    out = tmp_path / "packed"
    write_packed_dataset(str(out), manifest, iter(images), info, shard_size=16)
    first = load_packed_dataset(str(out))
    assert sorted(p.name for p in (out / "shards").iterdir()) == [f"part-0000{i}.parquet" for i in range(4)]
    assert list(first.manifest["shard"]) == [i // 16 for i in range(60)]
    assert np.array_equal(first.images, images) and first.info.image_size == 16

    bad = [img if i < 20 else img[:8] for i, img in enumerate(images)]
    with pytest.raises(DataError, match="all packed images must share one size"):
        write_packed_dataset(str(out), manifest, iter(bad), info, overwrite=True)
    assert np.array_equal(load_packed_dataset(str(out)).images, images)
    assert [p.name for p in tmp_path.iterdir()] == ["packed"]
    with pytest.raises(DataError, match="already exists"):
        write_packed_dataset(str(out), manifest, iter(images), info)
