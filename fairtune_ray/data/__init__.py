"""Data: the normalised manifest, packed uint8 image shards, and their producers."""
