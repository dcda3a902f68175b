"""Helpers every layer may use: atomic file writes and plain-text tables (no project imports)."""
