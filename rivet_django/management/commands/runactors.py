"""``python manage.py runactors``: one ASGI server (daphne) plus the actor runtime.

HTTP, WebSocket and every awake actor share one event loop. SIGINT/SIGTERM stop
accepting connections, put every actor to sleep with a final flush, and exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection
from django.utils.module_loading import import_string

logger = logging.getLogger("rivet_django.runactors")


class Command(BaseCommand):
    help = "Serve HTTP + WebSocket and run the actor runtime (one process, one event loop)."
    requires_system_checks = "__all__"  # type: ignore[assignment]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Interface to bind (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000, help="Port to bind (default 8000).")
        parser.add_argument("--node-id", default=None, help="This node's id (default RIVET['NODE_ID'] or host:port).")
        parser.add_argument("--prefix", default="/api/rivet", help="Where rivet_django's URLs are mounted.")

    def handle(self, *args: Any, **options: Any) -> None:
        # daphne.server installs Twisted's asyncio reactor on import: import it first.
        from daphne.server import Server
        from twisted.internet import reactor

        from ...compat import patch_daphne_close_reason
        from ...conf import rivet_settings
        from ...node import LocalNode, default_node_id, set_node
        from ...registry import actors

        patch_daphne_close_reason()
        host, port = options["host"], options["port"]
        node_id = options["node_id"] or default_node_id(port)
        application = import_string(settings.ASGI_APPLICATION)
        node = LocalNode(node_id=node_id, address=f"{host}:{port}")
        set_node(node)
        loop: asyncio.AbstractEventLoop = reactor._asyncioEventloop  # type: ignore[attr-defined]
        state: dict[str, Any] = {"ports": [], "stopping": False, "exit": 0}

        class RivetServer(Server):  # type: ignore[misc]
            def listen_success(self, port_obj: Any) -> None:
                super().listen_success(port_obj)
                state["ports"].append(port_obj)

            def listen_error(self, failure: Any) -> None:
                state["exit"] = 1
                super().listen_error(failure)

        server = RivetServer(
            application,
            endpoints=[f"tcp:port={port}:interface={host}"],
            signal_handlers=False,
            websocket_max_message_size=int(rivet_settings.MAX_OUTGOING_MESSAGE_SIZE),
            application_close_timeout=5,
        )

        async def start() -> None:
            try:
                await node.start()
            except Exception:
                logger.exception("The actor runtime failed to start")
                state["exit"] = 1
                reactor.stop()  # type: ignore[misc]
                return
            self._banner(host, port, node_id, options["prefix"], actors)

        async def shutdown() -> None:
            if state["stopping"]:
                return
            state["stopping"] = True
            self.stdout.write("Shutting down: no new connections, putting actors to sleep...")
            for port_obj in state["ports"]:
                port_obj.stopListening()
            try:
                await node.stop(float(rivet_settings.SHUTDOWN_TIMEOUT))
            except Exception:
                logger.exception("Error while stopping the actor runtime")
                state["exit"] = 1
            # Let the close frames just written leave the socket buffers.
            await asyncio.sleep(0.2)
            set_node(None)
            self.stdout.write("Stopped.")
            reactor.stop()  # type: ignore[misc]

        def on_signal() -> None:
            loop.create_task(shutdown())

        def install() -> None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal)
            loop.create_task(start())

        reactor.callWhenRunning(install)
        server.run()
        sys.stdout.flush()
        if state["exit"]:
            sys.exit(state["exit"])

    def _banner(self, host: str, port: int, node_id: str, prefix: str, actors: Any) -> None:
        from ...conf import rivet_settings

        base = f"http://{host}:{port}"
        layer = (getattr(settings, "CHANNEL_LAYERS", {}).get("default") or {}).get("BACKEND", "none")
        durabilities = sorted({d.options.durability for d in actors}) or ["commit"]
        lines = [
            f"rivet_django runactors: node {node_id}",
            f"  API:        {base}{prefix}",
            f"  API docs:   {base}{prefix}/docs",
            f"  Admin:      {base}/admin/",
            f"  Database:   {connection.vendor} ({connection.settings_dict.get('NAME')})",
            f"  Channels:   {layer.rsplit('.', 1)[-1]}",
            f"  Scheduler:  {rivet_settings.SCHEDULER}; durability: {', '.join(durabilities)}",
            f"  Actors ({len(actors)}): {', '.join(actors.names()) or '(none registered)'}",
            f"Listening on {base} (Ctrl-C to stop)",
        ]
        self.stdout.write("\n".join(lines))
        sys.stdout.flush()
