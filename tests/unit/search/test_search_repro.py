"""The same config and seed propose the same first trials (seeded TPE, baselines first)."""
from fairtune_ray.search.space import bit_keys, build_param_space, initial_points
from fairtune_ray.search.tuner import make_searcher


def _proposals(cfg, n_bits: int, n: int) -> list[dict]:
    searcher = make_searcher(cfg, initial_points(cfg, n_bits))
    searcher.set_search_properties("objective", "max", build_param_space(cfg, n_bits))
    return [searcher.suggest(f"t{i}") for i in range(n)]


def test_same_seed_same_first_trials(tiny_cfg):
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.search.max_concurrent = 10
    a, b = _proposals(cfg, 18, 6), _proposals(cfg, 18, 6)
    assert a == b
    keys = bit_keys(18)
    assert [a[0][k] for k in keys] == [1] * 18  # fine-tune every group (full-FT baseline in this space)
    assert [a[1][k] for k in keys] == [0] * 18  # linear probe
    cfg2 = cfg.model_copy(deep=True)
    cfg2.search.seed = 1
    assert _proposals(cfg2, 18, 6)[2:] != a[2:]
