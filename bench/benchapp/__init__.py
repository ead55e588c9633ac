"""Bench-only actors (see actors.py); installed by bench/settings.py only."""
