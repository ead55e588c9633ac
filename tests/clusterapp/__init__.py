"""Actors of the multi-node tests (tests/test_cluster.py), installed by tests.settings_cluster."""
