// The benchmark's load generator: the official RivetKit client (`rivetkit/client`,
// installed in bench/peer/node_modules) against any server that speaks RivetKit's
// client protocol, rivet_django or RivetKit itself.
//
//   node bench/load/load.mjs '<JSON config>'
//
// Run with Node 22 (bench/peer/node_modules/.bin/node). bench/run.py starts it
// pinned to the load core and reads its stdout, one JSON object per line:
//
//   {"type":"ready"}             setup done (connections open, actors created)
//   {"type":"start"}             the measured window begins
//   {"type":"end"}               the measured window is over
//   {"type":"result", ...}       numbers of the measured window
//   {"type":"fatal","error":..}  the generator itself broke
//
// Every loop is bounded by a deadline and a count; every call by a timeout. A
// failed or timed-out call is counted in `errors` (with a few samples), never
// dropped silently. Latencies come from process.hrtime.bigint().

import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const PEER = join(HERE, "..", "peer");
const { createClient } = await import(
	pathToFileURL(join(PEER, "node_modules", "rivetkit", "dist", "tsup", "client", "mod.js")).href
);

const cfg = JSON.parse(process.argv[2] ?? "{}");
const CALL_TIMEOUT_MS = cfg.call_timeout_ms ?? 30_000;
// Whatever happens, this process ends: the driver also kills it by pid.
const HARD_LIMIT_MS = cfg.hard_limit_ms ?? 600_000;
setTimeout(() => {
	emit({ type: "fatal", error: `hard time limit of ${HARD_LIMIT_MS} ms reached` });
	process.exit(3);
}, HARD_LIMIT_MS).unref();

function emit(obj) {
	process.stdout.write(`${JSON.stringify(obj)}\n`);
}

const nowNs = () => process.hrtime.bigint();
const msSince = (t0) => Number(nowNs() - t0) / 1e6;

class TimeoutError extends Error {}

function withTimeout(promise, ms, what) {
	let timer;
	const timeout = new Promise((_, reject) => {
		timer = setTimeout(() => reject(new TimeoutError(`${what} timed out after ${ms} ms`)), ms);
	});
	return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Counts errors by kind and keeps a few samples. */
class Errors {
	constructor() {
		this.count = 0;
		this.kinds = {};
		this.samples = [];
	}
	add(error) {
		this.count++;
		const kind =
			error instanceof TimeoutError
				? "timeout"
				: error?.group && error?.code
					? `${error.group}.${error.code}`
					: (error?.name ?? "Error");
		this.kinds[kind] = (this.kinds[kind] ?? 0) + 1;
		if (this.samples.length < 5) this.samples.push(`${kind}: ${String(error?.message ?? error).slice(0, 300)}`);
	}
	toJSON() {
		return { errors: this.count, error_kinds: this.kinds, error_samples: this.samples };
	}
}

function stats(latencies) {
	const a = Float64Array.from(latencies).sort();
	const n = a.length;
	if (n === 0) return { n: 0 };
	const q = (p) => a[Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1))];
	let sum = 0;
	for (const x of a) sum += x;
	return { n, mean_ms: sum / n, p50_ms: q(0.5), p90_ms: q(0.9), p99_ms: q(0.99), max_ms: a[n - 1], min_ms: a[0] };
}

/** Runs `fn(i)` for i in [0, n) with at most `concurrency` in flight. */
async function pool(n, concurrency, fn, deadlineMs = Number.POSITIVE_INFINITY) {
	let next = 0;
	const t0 = Date.now();
	async function worker() {
		while (next < n && Date.now() - t0 < deadlineMs) {
			const i = next++;
			await fn(i);
		}
	}
	await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
	return next;
}

function makeClient() {
	const options = { endpoint: cfg.endpoint, disableMetadataLookup: false };
	// Absent: the client's default encoding (bare).
	if (cfg.encoding && cfg.encoding !== "default") options.encoding = cfg.encoding;
	return createClient(options);
}

const keyOf = (i) => [`${cfg.prefix ?? "k"}-${i}`];

async function call(errors, fn, what) {
	try {
		await withTimeout(fn(), CALL_TIMEOUT_MS, what);
		return true;
	} catch (error) {
		errors.add(error);
		return false;
	}
}

/**
 * Workloads 1, 2 and 6: each caller makes its next call as soon as the last one
 * answered, for a warmup (not recorded), then for `duration_s` (recorded), bounded
 * in calls by `max_calls`. `callers` are functions returning each next call.
 */
async function measure(callers) {
	async function phase(durationMs, maxCalls, record) {
		const errors = new Errors();
		const latencies = [];
		let started = 0;
		const t0 = Date.now();
		async function worker(next) {
			while (Date.now() - t0 < durationMs && started < maxCalls) {
				started++;
				const c0 = nowNs();
				if (await call(errors, next, "increment")) latencies.push(msSince(c0));
			}
		}
		const w0 = nowNs();
		await Promise.all(callers.map(worker));
		const elapsed = msSince(w0) / 1000;
		return record ? { elapsed_s: elapsed, ok: latencies.length, ...errors.toJSON(), ...stats(latencies) } : null;
	}

	await phase(cfg.warmup_s * 1000, cfg.max_calls, false);
	emit({ type: "start" });
	const result = await phase(cfg.duration_s * 1000, cfg.max_calls, true);
	emit({ type: "end" });
	result.throughput = result.ok / result.elapsed_s;
	return result;
}

/** Workload 1 (and 6): `concurrency` callers, stateless HTTP actions over `keys` actors. */
async function runHttp(client) {
	const actor = client[cfg.actor];
	const handles = Array.from({ length: cfg.keys }, (_, i) => actor.getOrCreate(keyOf(i)));
	const setupErrors = new Errors();
	await pool(handles.length, 16, (i) => call(setupErrors, () => handles[i].getCount(), "create"), 120_000);
	emit({ type: "ready", setup: setupErrors });

	// Caller w takes every concurrency-th key, starting at its own.
	return measure(Array.from({ length: cfg.concurrency }, (_, w) => {
		let iter = 0;
		return () => handles[(w + iter++ * cfg.concurrency) % handles.length].increment(1);
	}));
}

async function openConn(handle, errors, what) {
	const conn = handle.connect();
	conn.onError((error) => errors.add(error));
	// An action answers only once the connection is open: it proves the socket works.
	const ok = await call(errors, () => conn.getCount(), what);
	return ok ? conn : (conn.dispose().catch(() => {}), null);
}

/** Workload 2: `connections` WebSocket connections, each calling sequentially. */
async function runWs(client) {
	const actor = client[cfg.actor];
	const setupErrors = new Errors();
	const conns = [];
	await pool(cfg.connections, 16, async (i) => {
		conns[i] = await openConn(actor.getOrCreate(keyOf(i % cfg.keys)), setupErrors, "connect");
	}, 120_000);
	const live = conns.filter(Boolean);
	emit({ type: "ready", setup: setupErrors, connections: live.length });

	const result = await measure(live.map((conn) => () => conn.increment(1)));
	result.connections = live.length;
	await Promise.all(live.map((c) => withTimeout(c.dispose(), 5000, "dispose").catch(() => {})));
	return result;
}

/**
 * Workload 3: `receivers` connections subscribed to "count" on one actor; a
 * separate connection sends `increments` increments, at most `window` in flight.
 * The n-th increment produces count n (one connection, in order), so an event's
 * delivery latency is its arrival time minus the send time of increment n.
 */
async function runFanout(client) {
	const handle = client[cfg.actor].getOrCreate(keyOf(0));
	const setupErrors = new Errors();
	const n = cfg.increments;
	const sendNs = new Array(n + 1);
	const latencies = [];
	let delivered = 0;
	let unexpected = 0;
	let lastRecv = 0n;
	const expected = cfg.receivers * n;
	let allDelivered;
	const allDeliveredP = new Promise((resolve) => {
		allDelivered = resolve;
	});
	const receivers = [];
	await pool(cfg.receivers, 16, async (i) => {
		const conn = handle.connect();
		conn.onError((error) => setupErrors.add(error));
		conn.on("count", (count) => {
			const t = nowNs();
			const sent = sendNs[Number(count)];
			if (sent === undefined) {
				unexpected++;
				return;
			}
			delivered++;
			lastRecv = t;
			latencies.push(Number(t - sent) / 1e6);
			if (delivered === expected) allDelivered();
		});
		// The subscription is sent before this action, so its answer proves both.
		if (await call(setupErrors, () => conn.getCount(), "subscribe")) receivers.push(conn);
		else conn.dispose().catch(() => {});
	}, 120_000);
	const sender = await openConn(handle, setupErrors, "sender");
	emit({ type: "ready", setup: setupErrors, receivers: receivers.length });
	if (!sender) throw new Error(`the sender connection failed: ${JSON.stringify(setupErrors)}`);

	const errors = new Errors();
	emit({ type: "start" });
	const t0 = nowNs();
	let sent = 0;
	await pool(n, cfg.window, async () => {
		sent++;
		sendNs[sent] = nowNs();
		await call(errors, () => sender.increment(1), "increment");
	}, cfg.duration_s * 1000);
	const sendElapsed = msSince(t0) / 1000;
	// Deliveries still in flight: wait for them, bounded.
	const waitMs = cfg.drain_timeout_ms ?? 30_000;
	const target = receivers.length * sent;
	if (delivered < target) {
		await Promise.race([allDeliveredP, new Promise((r) => setTimeout(r, waitMs))]);
	}
	emit({ type: "end" });
	const elapsed = Number((lastRecv > t0 ? lastRecv : nowNs()) - t0) / 1e9;
	const result = {
		sent,
		receivers: receivers.length,
		expected: receivers.length * sent,
		delivered,
		missing: receivers.length * sent - delivered,
		unexpected_events: unexpected,
		send_elapsed_s: sendElapsed,
		elapsed_s: elapsed,
		throughput: delivered / elapsed,
		increments_per_s: sent / sendElapsed,
		requested_increments: n,
		...errors.toJSON(),
		...stats(latencies),
	};
	await Promise.all(
		[...receivers, sender].map((c) => withTimeout(c.dispose(), 5000, "dispose").catch(() => {})),
	);
	return result;
}

/**
 * Workloads 4 and 7: one call at a time on `n` keys. `first` is the timed call
 * (getOrCreate + first action: creates the actor, or wakes a sleeping one);
 * `second` (optional) is a second call on the same actor, for comparison.
 */
async function runSequential(client) {
	const actor = client[cfg.actor];
	// Open the HTTP connection and JIT the client on an unrelated actor first.
	const setupErrors = new Errors();
	const warm = actor.getOrCreate([`${cfg.prefix}-warmup`]);
	for (let i = 0; i < 5; i++) await call(setupErrors, () => warm.getCount(), "warmup");
	emit({ type: "ready", setup: setupErrors });
	const errors = new Errors();
	const first = [];
	const second = [];
	emit({ type: "start" });
	const t0 = Date.now();
	let done = 0;
	for (let i = 0; i < cfg.n && Date.now() - t0 < cfg.duration_s * 1000; i++) {
		const h = actor.getOrCreate(keyOf(i));
		let c0 = nowNs();
		if (await call(errors, () => h[cfg.action](...(cfg.args ?? [])), cfg.action)) first.push(msSince(c0));
		if (cfg.second) {
			c0 = nowNs();
			if (await call(errors, () => h.getCount(), "getCount")) second.push(msSince(c0));
		}
		done++;
	}
	const elapsed = (Date.now() - t0) / 1000;
	emit({ type: "end" });
	return {
		attempted: done,
		ok: first.length,
		elapsed_s: elapsed,
		throughput: first.length / elapsed,
		...errors.toJSON(),
		...stats(first),
		second: cfg.second ? stats(second) : undefined,
	};
}

/** Workload 5 (and the setup of 7): create `n` actors, one action each, `concurrency` at a time. */
async function runCreate(client) {
	const actor = client[cfg.actor];
	emit({ type: "ready" });
	const errors = new Errors();
	const latencies = [];
	emit({ type: "start" });
	const t0 = nowNs();
	let lastReport = Date.now();
	const attempted = await pool(cfg.n, cfg.concurrency, async (i) => {
		const c0 = nowNs();
		const ok = await call(errors, () => actor.getOrCreate(keyOf(cfg.offset + i))[cfg.action](...(cfg.args ?? [])), cfg.action);
		if (ok) latencies.push(msSince(c0));
		if (Date.now() - lastReport > 5000) {
			lastReport = Date.now();
			emit({ type: "progress", done: latencies.length, errors: errors.count });
		}
	}, cfg.duration_s * 1000);
	const elapsed = msSince(t0) / 1000;
	emit({ type: "end" });
	return { attempted, ok: latencies.length, elapsed_s: elapsed, throughput: latencies.length / elapsed, ...errors.toJSON(), ...stats(latencies) };
}

/**
 * Reads the manager API (`GET /actors?name&key`, same route on both servers)
 * for a sample of keys: how many report `sleep_ts` (asleep).
 */
async function runCheckSleep() {
	emit({ type: "ready" });
	emit({ type: "start" });
	const errors = new Errors();
	let asleep = 0;
	let awake = 0;
	let missing = 0;
	const base = cfg.endpoint.replace(/\/$/, "");
	await pool(cfg.keys.length, 8, async (j) => {
		const key = `${cfg.prefix}-${cfg.keys[j]}`;
		const url = `${base}/actors?namespace=default&name=${encodeURIComponent(cfg.actor)}&key=${encodeURIComponent(key)}`;
		try {
			const response = await withTimeout(fetch(url, { headers: { authorization: "Bearer dev" } }), CALL_TIMEOUT_MS, "GET /actors");
			const body = await response.json();
			const record = body.actors?.[0];
			if (!record) missing++;
			else if (record.sleep_ts != null) asleep++;
			else awake++;
		} catch (error) {
			errors.add(error);
		}
	}, 60_000);
	emit({ type: "end" });
	return { sampled: cfg.keys.length, asleep, awake, missing, ...errors.toJSON() };
}

const MODES = { http: runHttp, ws: runWs, fanout: runFanout, sequential: runSequential, create: runCreate };

try {
	let result;
	if (cfg.mode === "check-sleep") {
		result = await runCheckSleep();
	} else {
		const mode = MODES[cfg.mode];
		if (!mode) throw new Error(`unknown mode ${cfg.mode}`);
		const client = makeClient();
		try {
			result = await mode(client);
		} finally {
			await withTimeout(client.dispose(), 10_000, "client.dispose").catch(() => {});
		}
	}
	emit({ type: "result", ...result });
	process.exit(0);
} catch (error) {
	emit({ type: "fatal", error: String(error?.stack ?? error) });
	process.exit(2);
}
