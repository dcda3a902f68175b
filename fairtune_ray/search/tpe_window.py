"""A bounded history for HyperOpt's TPE, so that the cost of a suggestion stays flat as a study grows.

HyperOpt's ``tpe.suggest`` rebuilds its Parzen estimators from every past trial at each suggestion:
O(n) per trial, 15 ms at trial 100 and 44 ms at trial 1,000 on 2 cores (benchmarks/RESULTS.md,
section 6). TPE splits the n finished trials into a "good" group, the best ceil(gamma sqrt(n))
(gamma 0.25, at most 25), and the rest, and proposes where good / rest is largest. With
``search.tpe_window: W`` it fits on at most W finished trials: exactly the good group full-history
TPE would use (the study's best), plus the most recent of the rest as its sample of "the rest"; its
gamma is set so that it takes the same good group out of the window. Only the "rest" density is
subsampled, which is what grows with n. Trials still running are always shown (as HyperOpt shows
them, with no loss). A study of at most W finished trials is unaffected.
"""
from __future__ import annotations

import math
from typing import Callable

from hyperopt.base import JOB_STATE_DONE
from hyperopt.tpe import _default_gamma, _default_linear_forgetting


class TrialsWindow:
    """What TPE reads of a hyperopt ``Trials``: its ``trials`` list, bounded; everything else (new trial
    ids and documents) is the study's own ``Trials``."""

    def __init__(self, trials, docs: list[dict]):
        self._trials = trials
        self.trials = docs

    def __len__(self) -> int:
        return len(self.trials)

    def __iter__(self):
        return iter(self.trials)

    def __getattr__(self, name: str):
        return getattr(self._trials, name)


def _finished(d: dict) -> bool:
    return d["state"] == JOB_STATE_DONE and d["result"].get("loss") is not None


def good_count(n: int, gamma: float = _default_gamma) -> int:
    """How many of n trials TPE puts in its good group (hyperopt's ``ap_split_trials``)."""
    return min(int(math.ceil(gamma * math.sqrt(n))), _default_linear_forgetting)


def window_docs(docs: list[dict], window: int, gamma: float = _default_gamma) -> tuple[list[dict], float]:
    """(the documents TPE fits on, the gamma that makes it take the study's good group from them).

    Every unfinished document, the study's ``good_count`` best finished ones, and the most recent
    finished ones up to ``window``, in the study's order."""
    finished = [d for d in docs if _finished(d)]
    if len(finished) <= window:
        return docs, gamma
    k = good_count(len(docs), gamma)  # TPE counts running trials (no loss: never good) in n as well
    best = {d["tid"] for d in sorted(finished, key=lambda d: float(d["result"]["loss"]))[:k]}
    kept = set(best)
    for d in reversed(finished):
        if len(kept) >= window:
            break
        kept.add(d["tid"])
    shown = [d for d in docs if d["tid"] in kept or not _finished(d)]
    return shown, (k - 0.5) / math.sqrt(len(shown))  # ceil(gamma' sqrt(len)) == k


def bounded_history(algo: Callable, window: int) -> Callable:
    """``algo`` (hyperopt's ``tpe.suggest``, partially applied) fitted on at most ``window`` finished trials."""

    def suggest(new_ids, domain, trials, seed):
        docs, gamma = window_docs(trials.trials, window)
        return algo(new_ids, domain, TrialsWindow(trials, docs), seed, gamma=gamma)

    return suggest
