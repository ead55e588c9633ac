"""``runactors --reload``: restart the node when the project's code changes, gracefully.

Django's autoreloader ends the serving process at once (``sys.exit(3)`` from its
watcher), which would strand the node's actors for a lease. Here a supervisor
process runs ``runactors`` as a child and watches the files Django's reloader
watches (every Python module loaded: settings, apps, actors, the URLconf and the
views it imports). On a change it stops the child with SIGTERM, so the actors go
through the stop sequence and release their leases, then starts a new one under
the same node id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["supervise"]

#: How often the files are looked at (seconds).
POLL_INTERVAL = 1.0


def _load_project() -> None:
    """Import what the server would (the URLconf, its views, the ASGI application) so
    their files are watched too."""
    from django.conf import settings
    from django.urls import get_resolver
    from django.utils.module_loading import import_string

    get_resolver().url_patterns  # noqa: B018 - imports every views module
    import_string(settings.ASGI_APPLICATION)


def _snapshot() -> dict[Path, float]:
    from django.utils.autoreload import iter_all_python_module_files

    times = {}
    for path in iter_all_python_module_files():
        try:
            times[path] = path.stat().st_mtime
        except OSError:
            continue
    return times


def _changed(before: dict[Path, float]) -> Path | None:
    for path, mtime in before.items():
        try:
            if path.stat().st_mtime != mtime:
                return path
        except OSError:
            return path
    return None


def supervise(argv: list[str], out: Any) -> int:
    """Run ``python <argv>`` (runactors without ``--reload``), restarting it on code changes."""
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        _load_project()
    except Exception as exc:  # the child reports it properly
        out.write(f"Could not import the project to watch it: {exc!r}")
    while True:
        files = _snapshot()
        child = subprocess.Popen([sys.executable, *argv], env={**os.environ, "RIVET_RELOADER_CHILD": "1"})
        changed = None
        while child.poll() is None and not stopping:
            time.sleep(POLL_INTERVAL)
            changed = _changed(files)
            if changed is not None:
                break
        if child.poll() is None:
            if changed is not None:
                out.write(f"{changed} changed: handing the actors off and restarting...")
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if stopping or changed is None:
            return child.returncode or 0
        time.sleep(0.2)  # editors write in several steps
