from django.apps import AppConfig


class ParityAppConfig(AppConfig):
    """Fixture actors for RivetKit 2.3.19 parity (tests/test_lifecycle.py, tests/js/parity.spec.mjs)."""

    name = "tests.parityapp"
    label = "parityapp"
