"""search.tpe_window: TPE fits on the best half and the most recent finished trials, nothing else."""
import math

import pytest
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_NEW

from fairtune_ray.config import load_config
from fairtune_ray.search.space import build_param_space
from fairtune_ray.search.tpe_window import good_count, window_docs
from fairtune_ray.search.tuner import make_searcher


def _doc(tid: int, loss, state=JOB_STATE_DONE) -> dict:
    return {"tid": tid, "state": state, "result": {"loss": loss, "status": "ok"} if loss is not None else {}}


def test_the_window_keeps_tpes_good_group_the_most_recent_and_every_running_trial():
    losses = [0.5, 0.1, 0.9, 0.2, 0.8, 0.7, 0.6, 0.3, 0.4]  # tids 0..8; the best by loss: 1, 3, 7
    docs = [_doc(t, loss) for t, loss in enumerate(losses)] + [_doc(9, None, JOB_STATE_NEW)]
    assert good_count(10) == 1  # ceil(0.25 sqrt(10))
    kept, gamma = window_docs(docs, 4)
    assert [d["tid"] for d in kept] == [1, 6, 7, 8, 9]  # the best (1), the three most recent, the running one
    assert math.ceil(gamma * math.sqrt(len(kept))) == 1  # TPE takes the same good group out of the window
    assert window_docs(docs, 9) == (docs, 0.25)  # no more finished trials than the window: all of them, as is


def _run(window, n: int, seed: int = 0) -> list[float]:
    """``n`` sequential TPE suggestions on a smooth objective over the mask bits and lr; the objectives."""
    cfg = load_config(None, overrides={"search.tpe_window": window, "search.n_initial_points": 4,
                                       "search.max_concurrent": 1, "search.seed": seed})
    searcher = make_searcher(cfg, [])
    searcher.set_search_properties("objective", "max", build_param_space(cfg, 6))
    values = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        value = sum(config[f"m{j:02d}"] for j in range(3)) - sum(config[f"m{j:02d}"] for j in range(3, 6)) \
            - abs(math.log10(config["lr"]) + 4)
        searcher.on_trial_complete(f"t{i}", {"objective": value})
        values.append(value)
    return values


def test_a_study_within_the_window_proposes_exactly_what_full_tpe_does():
    assert _run(100, 30) == _run(None, 30)


def test_tpe_sees_no_more_than_the_window(monkeypatch):
    import hyperopt.tpe

    seen = []
    real = hyperopt.tpe.suggest

    def spy(new_ids, domain, trials, seed, **kwargs):
        seen.append(len(trials.trials))
        return real(new_ids, domain, trials, seed, **kwargs)

    monkeypatch.setattr(hyperopt.tpe, "suggest", spy)  # Ray binds it when the searcher sets hyperopt up
    values = _run(10, 30)
    assert len(values) == 30 and seen[:10] == list(range(10))  # all of the history while it fits
    assert seen[10:] == [10] * 20  # then the window (sequential: no other trial running)


def test_a_window_smaller_than_twice_the_initial_points_is_refused():
    with pytest.raises(Exception, match="tpe_window"):
        load_config(None, overrides={"search.tpe_window": 5, "search.n_initial_points": 6})
