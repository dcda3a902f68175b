"""Search outcomes the CLI turns into exit codes; a module of its own so that catching them does not
import Ray, MLflow and torch into every command."""
from __future__ import annotations


class SearchInterrupted(RuntimeError):
    """The Tune run stopped (Ctrl-C / SIGINT) before every trial finished; its state is saved."""
