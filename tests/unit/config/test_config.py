import pytest

from fairtune_ray.config import ConfigError, config_from_dict, load_config
from fairtune_ray.config.reference import sections


def test_default_config_is_the_synthetic_demo():
    cfg = load_config(None)
    assert cfg.data.source == "synthetic"
    assert cfg.backbone.name == "micro"
    assert cfg.train.objective == "min_auc"


def test_unknown_key_names_its_path(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("search:\n  asha:\n    grace_perod: 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "search.asha.grace_perod" in str(e.value) and "unknown key" in str(e.value)
    assert str(p) in str(e.value)


def test_bad_value_names_key_and_reason():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"train": {"epochs": 0}})
    assert "train.epochs" in str(e.value)
    with pytest.raises(ConfigError) as e:
        config_from_dict({"trial": {"resources": {"gpu": -1}}})
    assert "trial.resources.gpu" in str(e.value)


def test_unknown_objective_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"train": {"objective": "min_aucc"}})
    assert "train" in str(e.value) and "min_aucc" in str(e.value)


def test_combined_objective_and_overrides():
    cfg = config_from_dict({"train": {"objective": "min_auc - 0.5*auc_gap"}}, overrides={"search.num_samples": 3})
    assert cfg.search.num_samples == 3


def test_lr_range_checked():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"search": {"lr_min": 1e-2, "lr_max": 1e-3}})
    assert "lr_min" in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def _all_fields():
    for section in sections():
        for name, field in section.model.model_fields.items():
            yield (f"{section.path}.{name}" if section.path else name), field


def test_every_config_field_has_a_description():
    missing = [key for key, field in _all_fields() if not (field.description or "").strip()]
    assert missing == [], f"config fields without Field(description=...): {missing}"


def test_every_config_section_has_a_docstring():
    assert [s.title for s in sections() if not (s.model.__doc__ or "").strip()] == []
