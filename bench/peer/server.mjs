// The RivetKit peer of the benchmark: the same actors as bench/benchapp/actors.py
// and demo_project/counter/actors.py, served by RivetKit's local dev server
// (registry.start(), which spawns the Rust engine shipped in
// @rivetkit/engine-cli). Run with Node 22 (node_modules/.bin/node):
//
//   env -u RUST_BACKTRACE RIVET_RUN_ENGINE=1 RIVET_RUN_ENGINE_PORT=6420 node server.mjs
//
// bench/run.py starts it pinned to the server core, with HOME pointing at a
// fresh folder (the engine keeps its data in $HOME/.rivetkit), waits for the
// "BENCH_READY" line, and stops it and the engine (which outlives this
// process; its pid is in $HOME/.rivetkit/var/engine/runtime.json) by pid.

import { actor, setup } from "rivetkit";
import { db } from "rivetkit/db";

const counterActions = {
	increment: (c, amount = 1) => {
		c.state.count += amount;
		c.broadcast("count", c.state.count);
		return c.state.count;
	},
	getCount: (c) => c.state.count,
};

// The demo counter: state {count}, increment broadcasts "count", getCount.
const counter = actor({ state: { count: 0 }, actions: counterActions });

// Workloads 5 (100,000 actors) and 7 (wake): falls asleep after 1 s idle.
const sleepyCounter = actor({
	state: { count: 0 },
	actions: counterActions,
	options: { sleepTimeout: 1_000 },
});

// Workload 5 (10,000 awake actors): stays awake until asked to sleep.
const memCounter = actor({
	state: { count: 0 },
	actions: {
		...counterActions,
		goToSleep: (c) => {
			c.sleep();
			return true;
		},
	},
	options: { sleepTimeout: 3_600_000 },
});

// Workload 8: increment inserts one row into the actor's own SQLite database (c.db).
const dbCounter = actor({
	db: db({
		onMigrate: async (d) => {
			await d.execute("CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL)");
		},
	}),
	actions: {
		increment: async (c, amount = 1) => {
			const rows = await c.db.execute("INSERT INTO log (amount) VALUES (?) RETURNING id", amount);
			return rows[0].id;
		},
		getCount: async (c) => (await c.db.execute("SELECT count(*) AS n FROM log"))[0].n,
	},
});

export const registry = setup({ use: { counter, sleepyCounter, memCounter, dbCounter } });

const t0 = Date.now();
await registry.startAndWait();
console.log(`BENCH_READY in ${Date.now() - t0} ms`);
