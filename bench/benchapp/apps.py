import os

from django.apps import AppConfig


class BenchAppConfig(AppConfig):
    """The benchmark's actors; never part of the demo project."""

    name = "bench.benchapp"
    label = "benchapp"

    def ready(self) -> None:
        path = os.environ.get("RIVET_BENCH_MEMPROBE")
        if path:
            from .memprobe import install

            install(path)
