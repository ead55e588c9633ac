// RivetKit 2.3.19 parity, through the official client (npm `rivetkit`, pinned in
// package.json) against a live rivet_django server running the test project
// (tests.settings_live): the fixture actors of tests/parityapp/actors.py.
//
//   RIVET_ENDPOINT=http://127.0.0.1:8000/api/rivet node --test tests/js/parity.spec.mjs
//
// tests/test_js_client.py starts that server and runs this file. Each case names
// the RivetKit behaviour it checks; timings come from the server's own clock (the
// fixtures write a journal that `parityJournal` serves).

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, describe, test } from "node:test";

import { createClient } from "rivetkit/client";

const endpoint = process.env.RIVET_ENDPOINT;
if (!endpoint) {
	throw new Error("Set RIVET_ENDPOINT, e.g. http://127.0.0.1:8000/api/rivet");
}

const RUN = `${Date.now().toString(36)}-${randomUUID().slice(0, 8)}`;
const CASE = { timeout: 30_000 };
const WAIT_MS = 8_000;

async function waitFor(predicate, what, ms = WAIT_MS) {
	const deadline = Date.now() + ms;
	for (;;) {
		const value = await predicate();
		if (value) return value;
		if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
		await sleep(20);
	}
}

function sleep(ms) {
	return new Promise((resolve) => setTimeout(resolve, ms));
}

async function rejects(promise, what) {
	try {
		const value = await promise;
		assert.fail(`expected an error from ${what}, got ${JSON.stringify(value)}`);
	} catch (error) {
		if (error instanceof assert.AssertionError) throw error;
		return error;
	}
}

/** Opens a raw WebSocket from `handle.webSocket(path)`; resolves with its first message or close. */
async function firstFrame(ws) {
	return await new Promise((resolve) => {
		ws.addEventListener("message", (event) => resolve({ message: event.data }));
		ws.addEventListener("close", (event) => resolve({ close: { code: event.code, reason: event.reason } }));
	});
}

function quantile(sorted, q) {
	return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

describe("RivetKit parity", () => {
	const client = createClient({ endpoint });
	const journal = client.parityJournal.getOrCreate(["journal"]);
	after(() => client.dispose());

	test("an idle actor sleeps sleep_timeout after its last call (on time)", CASE, async () => {
		const keys = Array.from({ length: 10 }, (_, i) => `ontime-${RUN}-${i}`);
		const ended = await Promise.all(keys.map((key) => client.napper.getOrCreate([key]).touch()));
		const delays = [];
		for (const [i, key] of keys.entries()) {
			const slept = await waitFor(
				async () => (await journal.entries(key)).find((e) => e.what === "sleep"),
				`${key} to sleep`,
			);
			delays.push((slept.t - ended[i] - 0.3) * 1000);
		}
		delays.sort((a, b) => a - b);
		console.log(`# sleep delay after sleep_timeout (ms): p50 ${quantile(delays, 0.5).toFixed(1)}, max ${delays.at(-1).toFixed(1)}`);
		assert.ok(delays[0] >= -5, `an actor slept early: ${delays}`);
		assert.ok(delays.at(-1) < 200, `late by up to ${delays.at(-1)} ms`);
	});

	test("stale handles reach the recreated actor: actions, queue sends, raw HTTP, raw WebSocket, connections", CASE, async () => {
		const key = [`phoenix-${RUN}`];
		const handle = client.phoenix.getOrCreate(key);
		const getHandle = client.phoenix.get(key);
		assert.equal(await handle.increment(5), 5);
		const firstId = await client.phoenix.getOrCreate(key).resolve();
		const conn = handle.connect();
		await waitFor(() => conn.connStatus === "connected", "the connection");
		assert.equal(await getHandle.increment(1), 6);

		await handle.destroy_me();
		await waitFor(
			async () => (await client.phoenix.getOrCreate(key).resolve()) !== firstId,
			"the key to name a new actor",
		);
		// The same handles now reach the new actor: fresh state.
		assert.equal(await handle.increment(1), 1);
		assert.equal(await getHandle.increment(1), 2);
		await handle.send("jobs", "after");
		assert.deepEqual(await handle.queued(), ["after"]);
		const response = await handle.fetch("/");
		assert.equal(response.status, 200);
		const body = await response.json();
		assert.notEqual(body.id, firstId);
		assert.equal(body.count, 2);
		const ws = await handle.webSocket("/");
		const frame = await firstFrame(ws);
		assert.equal(frame.message, body.id);
		ws.close();
		// The connection was closed by the destroy and came back on the new actor.
		assert.equal(await conn.increment(1), 3);
		await conn.dispose();
	});

	test("events without a declaration can be subscribed to and broadcast", CASE, async () => {
		const conn = client.eventful.getOrCreate([`events-${RUN}`]).connect();
		const seen = [];
		conn.on("undeclared", (value) => seen.push(value));
		conn.on("count", (value) => seen.push(`count ${value}`));
		await waitFor(() => conn.connStatus === "connected", "the connection");
		await conn.shout("undeclared", 1);
		await conn.shout("count", 2);
		await waitFor(() => seen.length === 2, `both events (got ${JSON.stringify(seen)})`);
		assert.deepEqual(seen, [1, "count 2"]);
		await conn.dispose();
	});

	test("queue sends to undeclared names are answered completed and dropped", CASE, async () => {
		for (const name of ["mailbox", "noQueues"]) {
			const handle = client[name].getOrCreate([`queues-${RUN}`]);
			assert.equal(await handle.send("missing", { n: 1 }), undefined);
			assert.deepEqual(await handle.send("missing", { n: 2 }, { wait: true, timeout: 1000 }), { status: "completed" });
			assert.deepEqual(await handle.stored(), [], `${name} stored a message to an undeclared queue`);
		}
		const mailbox = client.mailbox.getOrCreate([`queues-${RUN}`]);
		await mailbox.send("jobs", "kept");
		assert.deepEqual(await mailbox.stored(), [["jobs", "kept"]]);
	});

	test("raw /request and /websocket run the connection hooks; a refusal is 403 / close 1011", CASE, async () => {
		const key = `gate-${RUN}`;
		const allowed = client.gatekeeper.getOrCreate([key], { params: { who: "ann" } });
		const response = await allowed.fetch("/hello?x=1");
		assert.equal(response.status, 200);
		assert.deepEqual(await response.json(), { method: "GET", path: "/hello", who: "ann" });
		const ws = await allowed.webSocket("/room");
		assert.equal((await firstFrame(ws)).message, "ann /room");
		ws.close();
		await waitFor(
			async () => (await journal.entries(key)).filter((e) => e.what === "disconnect").length === 2,
			"on_disconnect after the request and after the socket",
		);
		const whats = (await journal.entries(key)).map((e) => e.what);
		assert.deepEqual(whats, ["before_connect", "connect", "disconnect", "before_connect", "connect", "disconnect"]);

		const refused = client.gatekeeper.getOrCreate([key], { params: { allow: false } });
		assert.equal((await refused.fetch("/hello")).status, 403);
		const closed = await firstFrame(await refused.webSocket("/room"));
		assert.deepEqual(closed.close, { code: 1011, reason: "auth.forbidden" });
	});

	test("raw routes: an empty path is /, and every method reaches on_request (OPTIONS: the gateway's 204)", CASE, async () => {
		const handle = client.gatekeeper.getOrCreate([`methods-${RUN}`]);
		assert.equal((await (await handle.fetch("")).json()).path, "/");
		const head = await handle.fetch("/x", { method: "HEAD" });
		assert.equal(head.status, 200);
		assert.equal(await head.text(), "");
		// A method Django has no view for (uvicorn's parser, httptools, knows the registered
		// methods only; a made-up token needs `runactors --server daphne`: tests/test_e2e.py).
		const propfind = await handle.fetch("/x", { method: "PROPFIND" });
		assert.equal((await propfind.json()).method, "PROPFIND");
		for (const method of ["PUT", "PATCH", "DELETE"]) {
			assert.equal((await (await handle.fetch("/x", { method, body: method === "DELETE" ? undefined : "b" })).json()).method, method);
		}
		const options = await handle.fetch("/x", { method: "OPTIONS" });
		assert.equal(options.status, 204);
	});

	test("error texts, codes and statuses", CASE, async () => {
		const handle = client.sluggish.getOrCreate([`errors-${RUN}`]);
		const timedOut = await rejects(handle.slow(), "slow()");
		assert.equal(`${timedOut.group}.${timedOut.code}`, "actor.action_timed_out");
		assert.ok(timedOut.message.startsWith("Action timed out"), timedOut.message);
		assert.ok(timedOut.message.includes("Meta.action_timeout"), timedOut.message);
		const internal = await rejects(handle.boom(), "boom()");
		assert.equal(`${internal.group}.${internal.code}`, "rivetkit.internal_error");
		assert.equal(internal.message, "An internal error occurred");
		const user = await rejects(handle.nope(), "nope()");
		assert.equal(`${user.group}.${user.code}`, "user.custom");
		assert.deepEqual(user.metadata, { why: "because" });
		// The HTTP statuses RivetKit answers with.
		const id = await handle.resolve();
		const statuses = {};
		for (const name of ["slow", "boom", "nope", "missing"]) {
			const res = await fetch(`${endpoint}/gateway/${id}/action/${name}`, {
				method: "POST",
				headers: { "content-type": "application/json", "x-rivet-encoding": "json" },
				body: JSON.stringify({ args: [] }),
			});
			statuses[name] = res.status;
		}
		assert.deepEqual(statuses, { slow: 408, boom: 500, nope: 500, missing: 404 });
	});

	test("the stop: on_sleep's broadcast arrives, calls during the stop run on the next instance", CASE, async () => {
		const key = [`stopper-${RUN}`];
		const handle = client.stopper.getOrCreate(key);
		const conn = handle.connect();
		const sleeping = [];
		conn.on("sleeping", (wakes) => sleeping.push(wakes));
		await waitFor(() => conn.connStatus === "connected", "the connection");
		assert.equal((await conn.ping()).wakes, 1);
		await conn.go_to_sleep();
		await waitFor(() => sleeping.length === 1, "the broadcast made in on_sleep");
		// A call on the (hibernated) connection wakes the actor again.
		assert.equal((await conn.ping()).wakes >= 2, true);
		const before = (await handle.ping()).wakes;
		// on_sleep takes a second: an action sent meanwhile waits and runs on the next instance.
		await handle.go_to_sleep("slow");
		const pong = await handle.ping();
		assert.ok(pong.wakes > before, `ran on instance ${pong.wakes}, expected a later one than ${before}`);
		// A new connection during a stop is refused with actor.stopping, which the client retries.
		await handle.go_to_sleep("slow");
		const late = client.stopper.getOrCreate(key).connect();
		await waitFor(() => late.connStatus === "connected", "the connection opened during a stop", 15_000);
		await late.dispose();
		await conn.dispose();
	});

	test("events stream while a long action runs", CASE, async () => {
		const conn = client.streamer.getOrCreate([`stream-${RUN}`]).connect();
		const seen = [];
		conn.on("progress", (step) => seen.push(step));
		await waitFor(() => conn.connStatus === "connected", "the connection");
		let done = false;
		const work = conn.work(3, 0.3).then((value) => {
			done = true;
			return value;
		});
		await waitFor(() => seen.length >= 1, "the first progress event");
		assert.equal(done, false, "the first event waited for the whole action");
		assert.equal(await work, 3);
		assert.deepEqual(seen, [1, 2, 3]);
		await conn.dispose();
	});

	test("a workflow's completable message answers a waiting sender with its response", CASE, async () => {
		const handle = client.wfEcho.getOrCreate([`echo-${RUN}`]);
		const result = await handle.send("requests", { value: 123 }, { wait: true, timeout: 5000 });
		assert.deepEqual(result, { status: "completed", response: { echo: { value: 123 } } });
	});
});
