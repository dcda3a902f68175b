"""The base class of every bad-input error, so the CLI reports them all as one ``error:`` line.

Why one base in ``common``: bad input is detected in several layers (config, data, models, Fisher),
and the command line must turn each into a message and exit code 2 in one place, without listing
every type or importing the layers that define them. It stays a ``ValueError``, as each of them
was before, so code that catches ``ValueError`` keeps working.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad user input (a config key, a dataset, a mask, a weights file); the message names what is at fault."""
