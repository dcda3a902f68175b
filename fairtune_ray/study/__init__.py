"""The study: the search's stages run in order by a small orchestrator (``run_search``)."""
from fairtune_ray.study.run import SearchOutcome, run_search

__all__ = ["SearchOutcome", "run_search"]
