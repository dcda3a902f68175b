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

The window's candidates are kept as trials finish (``HistoryWindow``): choosing the window touches
each new or running trial once, not the study's whole history sorted again at every suggestion.
"""
from __future__ import annotations

import bisect
import math
from typing import Callable

from hyperopt.base import JOB_STATE_DONE, JOB_VALID_STATES
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


class HistoryWindow:
    """The window of one study's documents, kept up to date as its trials finish.

    A finished document never changes (Ray's searcher writes its loss once, on completion), so each is
    filed once: by loss (for the good group) and by the order it entered the study (for "most recent").
    Only documents not finished yet are looked at again on the next call."""

    def __init__(self, window: int, gamma: float = _default_gamma):
        self.window, self.gamma = window, gamma
        self._seq: dict[int, int] = {}        # tid -> position in the order the study added it
        self._docs: dict[int, dict] = {}      # seq -> document
        self._open: dict[int, dict] = {}      # seq -> document not finished yet
        self._by_loss: list[tuple[float, int]] = []  # finished, (loss, seq), sorted
        self._finished: list[int] = []        # finished seqs, sorted

    def _file(self, docs: list[dict]) -> None:
        new = []
        for d in reversed(docs):  # the study appends new documents (it only drops failed ones elsewhere)
            if d["tid"] in self._seq:
                break
            new.append(d)
        for d in reversed(new):
            seq = self._seq[d["tid"]] = len(self._seq)
            self._docs[seq] = self._open[seq] = d
        for seq, d in list(self._open.items()):
            if _finished(d):
                bisect.insort(self._by_loss, (float(d["result"]["loss"]), seq))
                bisect.insort(self._finished, seq)
                del self._open[seq]
            elif d["state"] not in JOB_VALID_STATES:  # failed: ``Trials.refresh`` drops it from the study
                del self._open[seq]

    def select(self, docs: list[dict]) -> tuple[list[dict], float]:
        """(the documents TPE fits on, the gamma that makes it take the study's good group from them).

        Every unfinished document, the study's ``good_count`` best finished ones, and the most recent
        finished ones up to ``window``, in the study's order. ``docs`` is the study's (refreshed)
        ``Trials.trials``, the same study at every call."""
        self._file(docs)
        if len(self._finished) <= self.window:
            return docs, self.gamma
        k = good_count(len(docs), self.gamma)  # TPE counts running trials (no loss: never good) in n as well
        kept = {seq for _, seq in self._by_loss[:k]}
        for seq in reversed(self._finished):
            if len(kept) >= self.window:
                break
            kept.add(seq)
        shown = [self._docs[seq] for seq in sorted(kept.union(self._open))]
        return shown, (k - 0.5) / math.sqrt(len(shown))  # ceil(gamma' sqrt(len)) == k


def window_docs(docs: list[dict], window: int, gamma: float = _default_gamma) -> tuple[list[dict], float]:
    """``HistoryWindow.select`` on a list seen for the first time."""
    return HistoryWindow(window, gamma).select(docs)


def bounded_history(algo: Callable, window: int) -> Callable:
    """``algo`` (hyperopt's ``tpe.suggest``, partially applied) fitted on at most ``window`` finished trials."""
    held = {}  # the study's hyperopt ``Trials`` -> its window (a restored searcher brings a new one)

    def suggest(new_ids, domain, trials, seed):
        if held.get("trials") is not trials:
            held.update(trials=trials, history=HistoryWindow(window))
        docs, gamma = held["history"].select(trials.trials)
        return algo(new_ids, domain, TrialsWindow(trials, docs), seed, gamma=gamma)

    return suggest
