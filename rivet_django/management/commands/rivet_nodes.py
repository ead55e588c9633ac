"""``python manage.py rivet_nodes``: the cluster as the database sees it.

One line per node: id, address, live or dead (heartbeat younger than
``LEASE_SECONDS``), heartbeat age, actors it holds a live lease on, and actors whose
lease ran out while it held them. ``--prune`` deletes the rows of nodes dead for
longer than ``--older-than`` seconds; ``--json`` prints the table as JSON.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "List the nodes of the actor cluster with their health and actor counts."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
        parser.add_argument("--prune", action="store_true", help="Delete rows of nodes dead for --older-than seconds.")
        parser.add_argument("--older-than", type=float, default=3600.0, help="Seconds of silence before --prune deletes a node (default 3600).")

    def handle(self, *args: Any, **options: Any) -> None:
        from ...cluster.directory import node_table

        if options["prune"]:
            from ...storage.store import DjangoActorStore

            pruned = DjangoActorStore._prune_nodes(options["older_than"])
            if not options["json"]:
                self.stdout.write(f"Pruned {pruned} dead node(s).")
        table = node_table()
        if options["json"]:
            self.stdout.write(json.dumps({"nodes": table}, indent=2))
            return
        if not table:
            self.stdout.write("No nodes: no runactors process has started against this database.")
            return
        header = f"{'NODE':<24} {'ADDRESS':<40} {'STATUS':<6} {'HEARTBEAT':>9} {'ACTORS':>7} {'EXPIRED':>7}"
        self.stdout.write(header)
        for row in table:
            age = "-" if row["heartbeat_age"] is None else f"{row['heartbeat_age']}s"
            status = "live" if row["live"] else "dead"
            address = row["address"] or "(hosts, does not serve)"
            self.stdout.write(
                f"{row['id']:<24} {address:<40} {status:<6} {age:>9} {row['actors']:>7} {row['expired']:>7}"
            )
        live = sum(1 for row in table if row["live"])
        self.stdout.write(f"{live} live node(s), {sum(int(r['actors']) for r in table)} actor(s) awake.")
