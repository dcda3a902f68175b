"""Helpers every layer may use: atomic file writes, plain-text tables and the bad-input error base
(no project imports)."""
