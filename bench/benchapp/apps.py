from django.apps import AppConfig


class BenchAppConfig(AppConfig):
    """The benchmark's actors; never part of the demo project."""

    name = "bench.benchapp"
    label = "benchapp"
