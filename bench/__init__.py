"""The benchmark suite: rivet_django against RivetKit, same workloads, same run.

``python -m bench`` (see bench/README.md).
"""
