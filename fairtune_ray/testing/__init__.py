"""Test support that production code never imports (installed through ``search.epoch_hook``)."""
