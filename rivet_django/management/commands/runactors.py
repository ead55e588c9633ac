"""``python manage.py runactors``: one ASGI server plus the actor runtime, one event loop.

``--server uvicorn`` (default; uvloop + httptools) or ``--server daphne``
(Twisted's asyncio reactor). Either way HTTP, WebSocket and every awake
actor share one event loop. SIGINT/SIGTERM stop accepting connections, put every
actor to sleep with a final flush (WebSockets get a close reason), and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.utils.module_loading import import_string

logger = logging.getLogger("rivet_django.runactors")

SERVERS = ("daphne", "uvicorn")


class Command(BaseCommand):
    help = "Serve HTTP + WebSocket and run the actor runtime (one process, one event loop)."
    requires_system_checks = "__all__"  # type: ignore[assignment]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Interface to bind (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000, help="Port to bind (default 8000).")
        parser.add_argument("--node-id", default=None, help="This node's id (default RIVET['NODE_ID'] or host:port).")
        parser.add_argument(
            "--server", choices=SERVERS, default="uvicorn", help="ASGI server: uvicorn (default) or daphne."
        )
        parser.add_argument(
            "--reload",
            action="store_true",
            help="Development: restart when a Python file of the project changes (actors are handed off cleanly).",
        )
        parser.add_argument(
            "--nostatic",
            action="store_true",
            help="Do not serve static files under DEBUG (as runserver does with django.contrib.staticfiles).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["reload"]:
            from ...reloader import supervise

            sys.exit(supervise([a for a in sys.argv if a != "--reload"], self.stdout))
        from ...node import LocalNode, default_node_id, set_node

        host, port = options["host"], options["port"]
        self.host, self.port, self.prefix = host, port, _api_prefix()
        self.server_name = options["server"]
        self.serve_static = not options["nostatic"]
        self.node_id = options["node_id"] or default_node_id(port)
        self.address = _advertised_address(host, port, self.prefix)
        self.node = LocalNode(node_id=self.node_id, address=self.address)
        self.exit_code = 0
        self.stopping = False
        set_node(self.node)
        try:
            if options["server"] == "uvicorn":
                self.serve_uvicorn()
            else:
                self.serve_daphne()
        finally:
            set_node(None)
        sys.stdout.flush()
        if self.exit_code:
            sys.exit(self.exit_code)

    # -- node lifecycle, shared by both servers ---------------------------------

    async def start_node(self) -> bool:
        try:
            await self.node.start()
        except Exception:
            logger.exception("The actor runtime failed to start")
            self.exit_code = 1
            return False
        self.cluster_line = await self._cluster_line()
        self._banner()
        # Everything loaded so far (Django, the apps, the URLconf) lives as long as the
        # process: keep it out of the collector's way, or each full collection walks
        # it again and shows up as latency spikes under load.
        gc.collect()
        gc.freeze()
        return True

    async def stop_node(self) -> None:
        """Sleep every actor with a final flush; WebSockets get ``actor.stopping``."""
        from ...conf import rivet_settings

        self.stdout.write("Shutting down: no new connections, putting actors to sleep...")
        try:
            await self.node.stop(float(rivet_settings.SHUTDOWN_TIMEOUT))
        except Exception:
            logger.exception("Error while stopping the actor runtime")
            self.exit_code = 1
        # Let the close frames just written leave the socket buffers.
        await asyncio.sleep(0.2)
        self.stdout.write("Stopped.")

    # -- daphne ---------------------------------------------------------------

    def serve_daphne(self) -> None:
        # daphne.server installs Twisted's asyncio reactor on import: import it first.
        from daphne.server import Server
        from twisted.internet import reactor

        from ...compat import patch_daphne_close_reason
        from ...conf import rivet_settings

        patch_daphne_close_reason()
        command = self
        loop: asyncio.AbstractEventLoop = reactor._asyncioEventloop  # type: ignore[attr-defined]
        ports: list[Any] = []

        class RivetServer(Server):  # type: ignore[misc]
            def listen_success(self, port_obj: Any) -> None:
                super().listen_success(port_obj)
                ports.append(port_obj)

            def listen_error(self, failure: Any) -> None:
                command.exit_code = 1
                super().listen_error(failure)

        server = RivetServer(
            self.application(),
            endpoints=[f"tcp:port={self.port}:interface={self.host}"],
            signal_handlers=False,
            websocket_max_message_size=int(rivet_settings.MAX_OUTGOING_MESSAGE_SIZE),
            application_close_timeout=5,
        )

        async def start() -> None:
            if not await self.start_node():
                reactor.stop()  # type: ignore[misc]

        async def shutdown() -> None:
            if self.stopping:
                return
            self.stopping = True
            for port_obj in ports:
                port_obj.stopListening()
            await self.stop_node()
            reactor.stop()  # type: ignore[misc]

        def install() -> None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, lambda: loop.create_task(shutdown()))
            loop.create_task(start())

        reactor.callWhenRunning(install)
        server.run()

    def application(self) -> Any:
        """The project's ASGI application; under DEBUG with ``django.contrib.staticfiles``
        also serving static files (the admin's CSS), as ``runserver`` does."""
        application = import_string(settings.ASGI_APPLICATION)
        if self.serve_static and settings.DEBUG:
            from django.apps import apps

            if apps.is_installed("django.contrib.staticfiles"):
                from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

                return ASGIStaticFilesHandler(application)
        return application

    # -- uvicorn --------------------------------------------------------------

    def serve_uvicorn(self) -> None:
        try:
            import uvicorn
        except ImportError as exc:  # pragma: no cover - uvicorn is in requirements.txt
            raise CommandError("--server uvicorn needs uvicorn installed") from exc
        from ...conf import rivet_settings

        command = self
        config = uvicorn.Config(
            self.application(),
            host=self.host,
            port=self.port,
            lifespan="off",  # Channels' router does not speak lifespan; the node has its own.
            log_level="warning",
            access_log=False,
            ws_max_size=int(rivet_settings.MAX_OUTGOING_MESSAGE_SIZE),
            # Actor frames are small: compressing each costs more CPU than it saves bytes.
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=5,
        )

        class RivetUvicorn(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                # Ours, not uvicorn's: uvicorn re-raises the signal after shutdown,
                # which would end the process with -15 instead of 0.
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, self.request_exit)
                try:
                    yield
                finally:
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        loop.remove_signal_handler(sig)

            def request_exit(self) -> None:
                self.should_exit = True

            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                if not self.should_exit and not await command.start_node():
                    self.should_exit = True

            async def shutdown(self, sockets: Any = None) -> None:
                # Stop accepting, sleep the actors (closing WebSockets with a reason),
                # then let uvicorn finish the remaining connections.
                for server in self.servers:
                    server.close()
                command.stopping = True
                if command.node.runtime.started:
                    await command.stop_node()
                await super().shutdown(sockets)

        server = RivetUvicorn(config)
        try:
            import uvloop
        except ImportError:
            asyncio.run(server.serve())
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(server.serve())
        if not server.started:
            self.exit_code = 1

    async def _cluster_line(self) -> str:
        """The live nodes this node sees (from the ``Node`` table)."""
        try:
            nodes = await self.node.store.live_nodes(float(self.node.runtime.config.lease_seconds))
        except Exception:
            return "(could not read the node table)"
        others = sorted(n.node_id for n in nodes if n.node_id != self.node_id and n.address)
        if not others:
            return "this node only (more nodes on the same database join it)"
        return f"{len(others) + 1} live nodes: {self.node_id} (this one), {', '.join(others)}"

    def _banner(self) -> None:
        """What this node serves: URLs, database, channel layer, scheduler, actors."""
        from ...conf import rivet_settings
        from ...registry import actors

        base = f"http://{self.host}:{self.port}"
        layer = (getattr(settings, "CHANNEL_LAYERS", {}).get("default") or {}).get("BACKEND", "none")
        durabilities = sorted({d.options.durability for d in actors}) or ["commit"]
        lines = [
            f"rivet_django runactors: node {self.node_id}",
            f"  Address:    {self.address} (other processes forward here)",
            f"  Cluster:    {self.cluster_line}",
            f"  API:        {base}{self.prefix}",
            f"  API docs:   {base}{self.prefix}/docs",
            f"  Admin:      {base}/admin/",
            f"  Database:   {connection.vendor} ({connection.settings_dict.get('NAME')})",
            f"  Channels:   {layer.rsplit('.', 1)[-1]}",
            f"  Mode:       {_mode(layer)}",
            f"  Server:     {self.server_name}",
            f"  Scheduler:  {rivet_settings.SCHEDULER}; durability: {', '.join(durabilities)}",
            f"  Inspector:  {_inspector_line()}",
            f"  Actors ({len(actors)}): {', '.join(actors.names()) or '(none registered)'}",
            f"Listening on {base} (Ctrl-C to stop)",
        ]
        self.stdout.write("\n".join(lines))
        sys.stdout.flush()


def _inspector_line() -> str:
    from ...conf import rivet_settings
    from ...runtime.inspector import inspector_open

    if inspector_open():
        return "OPEN to anyone (DEBUG on, no RIVET['INSPECTOR_TOKEN']): .../gateway/{actor}/inspector/..."
    if rivet_settings.INSPECTOR_TOKEN:
        return "token required (RIVET['INSPECTOR_TOKEN'] or the actor's own token)"
    return "token required (each actor's own token; no RIVET['INSPECTOR_TOKEN'] set)"


def _advertised_address(host: str, port: int, prefix: str) -> str:
    """The URL other processes forward to: ``RIVET["NODE_ADDRESS"]``, else built from the bind address."""
    import socket

    from ...conf import rivet_settings

    if rivet_settings.NODE_ADDRESS:
        return str(rivet_settings.NODE_ADDRESS).rstrip("/")
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{prefix}"


def _api_prefix() -> str:
    """Where the project mounted ``rivet_django.urls`` (read from its URLconf)."""
    from django.urls import NoReverseMatch, reverse

    try:
        return reverse("rivet:get_metadata").rsplit("/metadata", 1)[0]
    except NoReverseMatch:
        return "/api/rivet"


def _mode(layer: str) -> str:
    if connection.vendor == "sqlite" and layer.endswith("InMemoryChannelLayer"):
        return "embedded (one process: SQLite, in-memory channel layer)"
    return f"{connection.vendor} database, {layer.rsplit('.', 1)[-1]} (cluster-capable)"
