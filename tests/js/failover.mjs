// Driver for tests/test_cluster.py: an official RivetKit client (pinned 2.3.19)
// connected through a load balancer in front of a cluster, while the test kills
// the node it is on. Prints one JSON line per thing it sees, on stdout:
//   {"t": ms, "status": "connected"}      connection status changes
//   {"t": ms, "open": true}               each (re)open, after Init
//   {"t": ms, "event": n}                  each "counted" event
// and ends (exit 0) when stdin closes. RIVET_ENDPOINT is the balancer; KEY the actor key.

import { createClient } from "rivetkit/client";

const endpoint = process.env.RIVET_ENDPOINT;
const key = process.env.KEY ?? "js-failover";
const say = (obj) => process.stdout.write(`${JSON.stringify({ t: Date.now(), ...obj })}\n`);

const client = createClient(endpoint);
const conn = client.ledger.getOrCreate([key]).connect();
conn.onStatusChange((status) => say({ status }));
conn.onOpen(() => say({ open: true }));
conn.onError((error) => say({ error: String(error?.group ?? "") + "." + String(error?.code ?? error) }));
conn.on("counted", (n) => say({ event: n }));

process.stdin.resume();
process.stdin.on("end", async () => {
	await conn.dispose();
	process.exit(0);
});
