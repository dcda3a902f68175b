"""search.tpe_window: TPE fits on its good group and the most recent finished trials, nothing else."""
import math
import random

import pytest
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, JOB_STATE_NEW

from fairtune_ray.config import load_config
from fairtune_ray.search.space import build_param_space
from fairtune_ray.search.tpe_window import HistoryWindow, good_count, window_docs
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


def _window_by_definition(docs: list[dict], window: int) -> list[int]:
    """The window as its docstring defines it, from the whole list at once (the oracle)."""
    finished = [d for d in docs if d["state"] == JOB_STATE_DONE and d["result"].get("loss") is not None]
    if len(finished) <= window:
        return [d["tid"] for d in docs]
    kept = {d["tid"] for d in sorted(finished, key=lambda d: d["result"]["loss"])[:good_count(len(docs))]}
    for d in reversed(finished):
        if len(kept) >= window:
            break
        kept.add(d["tid"])
    return [d["tid"] for d in docs if d["tid"] in kept or d not in finished]


def test_the_window_kept_as_trials_finish_is_the_window_by_definition():
    """A study of 400 trials, 3 running at a time, finishing out of order, some failing (a refresh drops
    them) and some losses tied: the incrementally kept window equals the oracle at every suggestion."""
    rng = random.Random(0)
    history, dynamic, running = HistoryWindow(40), [], []
    for tid in range(400):
        dynamic.append(_doc(tid, None, JOB_STATE_NEW))
        running.append(dynamic[-1])
        if len(running) == 3:
            d = running.pop(rng.randrange(3))
            if rng.random() < 0.05:
                d["state"] = JOB_STATE_ERROR
            else:
                d.update(state=JOB_STATE_DONE, result={"loss": round(rng.random(), 2), "status": "ok"})
        docs = [d for d in dynamic if d["state"] != JOB_STATE_ERROR]  # what Trials.refresh leaves
        kept, gamma = history.select(docs)
        assert [d["tid"] for d in kept] == _window_by_definition(docs, 40), tid
        assert (kept, gamma) == window_docs(docs, 40)


def test_results_land_on_the_trials_own_document_also_in_a_restored_searcher(tmp_path):
    """The searcher finds a trial's document by its tid (not by a scan of the study); a searcher restored
    from a checkpoint writes into its own restored study, not into the documents it was built with."""
    cfg = load_config(None, overrides={"search.tpe_window": 10, "search.n_initial_points": 2,
                                       "search.max_concurrent": 3})
    space = build_param_space(cfg, 6)
    first = make_searcher(cfg, []).searcher  # the limiter's own state is saved apart by Tune
    first.set_search_properties("objective", "max", space)
    for i in range(3):
        first.suggest(f"t{i}")
    first.on_trial_complete("t0", {"objective": 0.25})
    first.save(str(tmp_path / "searcher.pkl"))

    restored = make_searcher(cfg, []).searcher
    restored.set_search_properties("objective", "max", space)
    restored.restore(str(tmp_path / "searcher.pkl"))
    tid = restored._live_trial_mapping["t2"][0]
    restored.on_trial_complete("t2", {"objective": 0.75})

    def doc(searcher, tid):
        return next(d for d in searcher._hpopt_trials.trials if d["tid"] == tid)

    assert doc(restored, tid)["state"] == JOB_STATE_DONE and doc(restored, tid)["result"]["loss"] == -0.75
    assert doc(first, tid)["state"] != JOB_STATE_DONE  # the original study is untouched
    assert [d["result"].get("loss") for d in restored._hpopt_trials.trials
            if d["state"] == JOB_STATE_DONE] == [-0.25, -0.75]
