"""The search's ``peft`` dimension: absent by default, flat conditional dimensions when asked for, read
back into TrialSpecs; PEFT baselines; the preflight error on a backbone without adapter targets."""
import pytest

from fairtune_ray.config import ConfigError, load_config
from fairtune_ray.search.child_run import trial_params
from fairtune_ray.search.preflight import check_adapters, preflight
from fairtune_ray.search.space import baseline_points, bit_keys, build_param_space, initial_points, spec_from_trial_config
from fairtune_ray.search.stages.select import baseline_candidates
from fairtune_ray.search.tuner import make_searcher

N = 18
PEFT_KEYS = {"peft", "peft_rank", "peft_alpha", "peft_targets"}
SEARCHED = {"peft.methods": ["mask", "lora", "ia3"]}


def test_the_default_space_is_unchanged():
    cfg = load_config(None)
    space = build_param_space(cfg, N)
    assert set(space) == {*bit_keys(N), "lr"}
    assert all(not PEFT_KEYS & set(p) for p in baseline_points(cfg, N))


def test_a_peft_dimension_with_its_conditional_parameters():
    cfg = load_config(None, overrides=SEARCHED)
    space = build_param_space(cfg, N)
    assert PEFT_KEYS <= set(space)
    assert space["peft"].categories == ["mask", "lora", "ia3"]
    assert space["peft_targets"].categories == ["qkv+proj+fc1+fc2", "qkv+proj", "fc1+fc2"]
    full, linear = baseline_points(cfg, N)
    assert full["peft"] == linear["peft"] == "mask"  # all ones is still full fine-tuning


def test_trial_configs_become_specs():
    cfg = load_config(None, overrides=SEARCHED)
    bits = {k: 1 for k in bit_keys(N)}
    point = {**bits, "lr": 1e-4, "peft": "lora", "peft_rank": 8, "peft_alpha": 16.0, "peft_targets": "qkv+proj"}
    spec = spec_from_trial_config(point, cfg, "attn_mlp_norm", N)
    assert (spec.peft, spec.peft_rank, spec.peft_alpha, spec.peft_targets) == ("lora", 8, 16.0, ["qkv", "proj"])
    assert spec.adapters().kinds == ("qkv", "proj")
    params = trial_params(spec, "attn_mlp_norm")
    assert params["peft"] == "lora" and params["peft_rank"] == 8 and params["peft_targets"] == "qkv+proj"
    masked = spec_from_trial_config({**point, "peft": "mask"}, cfg, "attn_mlp_norm", N)
    assert masked.adapters() is None and trial_params(masked, "attn_mlp_norm")["peft"] == "mask"
    ia3 = trial_params(spec_from_trial_config({**point, "peft": "ia3"}, cfg, "attn_mlp_norm", N), "attn_mlp_norm")
    assert ia3["peft"] == "ia3" and "peft_rank" not in ia3  # IA3 reads no rank


def test_adapters_replace_the_fisher_factors():
    cfg = load_config(None, overrides={**SEARCHED, "search.method": "both"})
    point = {**{k: 1 for k in bit_keys(N)}, "lr": 1e-4, "ewc_on": 0, "ewc_lambda": 1.0, "gamma": 0.0,
             "rank": 4, "factorise": "qkv+proj+fc1+fc2", "peft": "lora", "peft_rank": 4, "peft_alpha": 8.0,
             "peft_targets": "qkv+proj"}
    spec = spec_from_trial_config(point, cfg, "attn_mlp_norm", N)
    assert spec.peft == "lora" and spec.factorise == [] and not spec.uses_fisher


def test_hyperopt_searches_the_peft_dimension():
    cfg = load_config(None, overrides={**SEARCHED, "search.max_concurrent": 10, "search.n_initial_points": 2})
    searcher = make_searcher(cfg, initial_points(cfg, N))
    searcher.set_search_properties("objective", "max", build_param_space(cfg, N))
    proposals = [searcher.suggest(f"t{i}") for i in range(8)]
    assert all(PEFT_KEYS <= set(p) for p in proposals)
    assert proposals[0]["peft"] == "mask" and {p["peft"] for p in proposals} <= {"mask", "lora", "ia3"}
    assert len({p["peft"] for p in proposals}) > 1


def test_peft_baselines_take_the_peft_section():
    cfg = load_config(None, overrides={"search.baselines": ["full", "lora", "dora", "ia3", "loha"], "peft.rank": 2,
                                       "peft.targets": ["qkv"]})
    cands = baseline_candidates(cfg)
    assert [c.method for c in cands] == ["Full fine-tuning", "LoRA", "DoRA", "IA3", "LoHa"]
    assert cands[0].spec.adapters() is None
    for c in cands[1:]:
        assert c.spec.adapters().method == c.spec.mask and c.spec.peft_rank == 2 and c.spec.peft_targets == ["qkv"]
    preflight(cfg)  # they fit the micro ViT


def test_a_backbone_without_targets_is_a_config_error_before_ray():
    resnet = {"backbone.name": "resnet10t", "mask.space": "stage"}
    with pytest.raises(ConfigError, match=r"peft.target_sets\[0\]: PEFT \['lora'\] on backbone 'resnet10t'"):
        preflight(load_config(None, overrides={**resnet, "peft.methods": ["mask", "lora"]}))
    with pytest.raises(ConfigError, match=r"search.baselines\[1\]: mask space 'ia3' does not fit"):
        preflight(load_config(None, overrides={**resnet, "search.baselines": ["full", "ia3"]}))
    with pytest.raises(ConfigError, match="peft.targets: PEFT \\['lora'\\]"):
        check_adapters(load_config(None, overrides={"peft.targets": ["conv1"]}), finetune="lora")
    preflight(load_config(None, overrides=resnet))  # masks alone still fit


def test_the_peft_section_and_the_old_lora_rank():
    assert load_config(None, overrides={"train.lora_rank": 6}).peft.rank == 6
    with pytest.raises(ConfigError, match="old name of peft.rank"):
        load_config(None, overrides={"train.lora_rank": 6, "peft.rank": 2})
    with pytest.raises(ConfigError, match="peft.methods"):
        load_config(None, overrides={"peft.methods": ["mask", "vera"]})
    assert not load_config(None).peft.searched and load_config(None, overrides=SEARCHED).peft.searched


def test_the_mask_heat_map_names_the_method_per_trial():
    from fairtune_ray.reporting.plots import mask_heatmap_figure, peft_label

    lora = {"m00": 1, "m01": 0, "lr": 1e-4, "peft": "lora", "peft_rank": 8, "peft_alpha": 16.0, "peft_targets": "qkv+proj"}
    assert peft_label(lora) == "  lora r8 a16 qkv+proj"
    assert peft_label({**lora, "peft": "ia3"}) == "  ia3 qkv+proj" and peft_label({"m00": 1}) == ""
    trials = [{"trial_id": "a", "objective": 0.7, "config": lora}, {"trial_id": "b", "objective": 0.6,
                                                                    "config": {**lora, "peft": "mask"}}]
    fig = mask_heatmap_figure(trials, ["m00", "m01"], ["blocks.0.attn", "blocks.0.mlp"], "min_auc", "max", "a")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0].endswith("lora r8 a16 qkv+proj") and "lora" not in labels[1]
