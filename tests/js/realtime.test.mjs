// The official RivetKit client (npm `rivetkit`, pinned in package.json) against a
// live rivet_django server, for everything that is not a plain request/response:
// stateful connections (status callbacks, events with on/once, unsubscribe),
// conn params reaching the connect hooks, refusals from `on_before_connect`,
// and the raw `fetch` / `webSocket` passthrough of a handle.
//
// Actors: `counter` (demo_project/counter/actors.py) and `chatRoom`
// (demo_project/chat/actors.py).
//
//   RIVET_ENDPOINT=http://127.0.0.1:8000/api/rivet node --test tests/js/
//
// tests/test_js_client.py starts the server and runs this file. Every case runs
// once per wire encoding the client supports (json, cbor and the default, bare).
//
// Client behaviour these tests lean on (rivetkit 2.3.19, src/client/):
// - `handle.connect()` starts connecting synchronously: `connStatus` is already
//   "connecting" when it returns, so `onStatusChange` only sees what follows.
// - `on`/`once` listeners live on the client; the first listener of a name sends
//   SubscriptionRequest{subscribe: true}, removing the last sends `false`.
// - A connection-level `Error` (actionId null) before `Init` rejects the open,
//   in-flight actions and calls `onError`; with a non-lifecycle code (e.g.
//   `user.*`) the client does not retry.
// - `conn.send` / `handle.send` are the client's *queue* send, never an action
//   (which is why the chat room's action is `sendMessage`).

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, describe, test } from "node:test";

import { createClient } from "rivetkit/client";

const endpoint = process.env.RIVET_ENDPOINT;
if (!endpoint) {
	throw new Error("Set RIVET_ENDPOINT, e.g. http://127.0.0.1:8000/api/rivet");
}

// Unique per run, so re-running against the same server database still starts
// from fresh actors.
const RUN = `${Date.now().toString(36)}-${randomUUID().slice(0, 8)}`;
// The client retries some failures forever: a bounded time per case turns a
// hang into a failure that names the case.
const CASE = { timeout: 30_000 };
// How long to wait for something that should happen, and how long to watch for
// something that should not.
const WAIT_MS = 5_000;
const QUIET_MS = 400;
// The chat room's "post a message" action (demo_project/chat/actors.py). It must
// not be called `send`: the client's proxy would route that to its queue send.
const SEND_ACTION = "sendMessage";

// Any unhandled rejection (e.g. a connection promise nobody awaited) is a bug
// in how the server drove the client; the last case asserts there were none.
const unhandled = [];
process.on("unhandledRejection", (reason) => {
	unhandled.push(reason);
});

/** Resolves once `predicate()` is truthy; rejects after `ms` naming `what`. */
async function waitFor(predicate, what, ms = WAIT_MS) {
	const deadline = Date.now() + ms;
	for (;;) {
		const value = predicate();
		if (value) return value;
		if (Date.now() >= deadline) {
			throw new Error(`timed out after ${ms} ms waiting for ${what}`);
		}
		await sleep(10);
	}
}

/** `promise`, or a rejection naming `what` after `ms`. */
async function withTimeout(promise, what, ms = WAIT_MS) {
	let timer;
	const timeout = new Promise((_, reject) => {
		timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
	});
	try {
		return await Promise.race([promise, timeout]);
	} finally {
		clearTimeout(timer);
	}
}

function sleep(ms) {
	return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Awaits `promise`, expecting an ActorError (RivetError); returns it. */
async function rejectsWithActorError(promise, what = "the call") {
	try {
		const value = await withTimeout(promise, what);
		assert.fail(`expected an ActorError from ${what}, got the value ${JSON.stringify(value)}`);
	} catch (error) {
		if (error instanceof assert.AssertionError) throw error;
		assert.equal(typeof error?.group, "string", `expected an ActorError with group/code, got ${error?.stack ?? error}`);
		assert.equal(typeof error.code, "string", `expected an ActorError with a code, got ${error?.stack ?? error}`);
		return error;
	}
}

/** Records everything a connection reports about its lifecycle. */
function watch(conn) {
	const log = { statuses: [], opens: 0, closes: 0, errors: [] };
	conn.onStatusChange((status) => log.statuses.push(status));
	conn.onOpen(() => {
		log.opens += 1;
	});
	conn.onClose(() => {
		log.closes += 1;
	});
	conn.onError((error) => log.errors.push(error));
	return log;
}

/** Waits for the connection's first `onOpen`. */
async function opened(conn, log, what) {
	await waitFor(() => log.opens > 0 || log.errors.length > 0, `${what} to open`);
	assert.deepEqual(
		log.errors.map((e) => `${e.group}.${e.code}: ${e.message}`),
		[],
		`${what} reported errors while opening`,
	);
	assert.equal(conn.connStatus, "connected");
}

/** Records the arguments of every `name` event the connection gets. */
function record(conn, name, { once = false } = {}) {
	const seen = [];
	const off = (once ? conn.once : conn.on)(name, (...args) => seen.push(args.length === 1 ? args[0] : args));
	return { seen, off };
}

async function disposeAll(...conns) {
	await Promise.all(conns.filter(Boolean).map((conn) => withTimeout(conn.dispose(), "dispose()")));
}

function sameMembers(expected) {
	return (names) => Array.isArray(names) && JSON.stringify(names) === JSON.stringify(expected);
}

for (const encoding of ["json", "cbor", "bare"]) {
	describe(`realtime over ${encoding}`, () => {
		const client = createClient({ endpoint, encoding });
		after(() => client.dispose());

		test("connect: status callbacks, on/once, events from actions over the socket and over HTTP", CASE, async () => {
			const key = ["rt-events", encoding, RUN];
			const handle = client.counter.getOrCreate(key);
			const conn = handle.connect();
			// connect() starts at once: the status is already "connecting".
			assert.equal(conn.connStatus, "connecting");
			const log = watch(conn);
			try {
				const every = record(conn, "count");
				const first = record(conn, "count", { once: true });
				await opened(conn, log, "the counter connection");
				assert.deepEqual(log.statuses, ["connected"]);
				assert.equal(log.opens, 1);
				await withTimeout(conn.ready, "conn.ready");
				assert.equal(conn.actorId, await handle.resolve(), "Init carried another actor id than the key resolves to");
				assert.equal(typeof conn.connId, "string");
				assert.ok(conn.connId.length > 0, "Init carried an empty connection id");

				// An action over the socket answers with the new count and broadcasts it.
				assert.equal(await withTimeout(conn.increment(2), "conn.increment(2)"), 2);
				await waitFor(() => every.seen.includes(2), `"count" 2 on the connection (got ${JSON.stringify(every.seen)})`);

				// A stateless call through another handle reaches this connection too.
				assert.equal(await client.counter.getOrCreate(key).increment(3), 5);
				await waitFor(() => every.seen.includes(5), `"count" 5 on the connection (got ${JSON.stringify(every.seen)})`);
				assert.deepEqual(every.seen, [2, 5]);
				// `once` fired for the first event only.
				assert.deepEqual(first.seen, [2]);

				assert.equal(await conn.getCount(), 5);
				assert.equal(log.closes, 0);
				assert.deepEqual(log.errors, []);
			} finally {
				await disposeAll(conn);
			}
		});

		test("unsubscribe stops delivery while another connection keeps it; re-subscribe works", CASE, async () => {
			const key = ["rt-unsub", encoding, RUN];
			const conn = client.counter.getOrCreate(key).connect();
			const other = client.counter.getOrCreate(key).connect();
			const log = watch(conn);
			const otherLog = watch(other);
			try {
				const mine = record(conn, "count");
				const theirs = record(other, "count");
				await opened(conn, log, "the first connection");
				await opened(other, otherLog, "the second connection");
				// A round trip on each socket after its SubscriptionRequest.
				await conn.getCount();
				await other.getCount();

				assert.equal(await client.counter.getOrCreate(key).increment(1), 1);
				await waitFor(() => mine.seen.includes(1) && theirs.seen.includes(1), "count 1 on both connections");

				// Last listener gone: the client sends subscribe=false. The client also
				// drops events nobody listens to, so this checks what a user sees; that
				// the server stops sending is for the protocol tests (raw frames).
				mine.off();
				await conn.getCount();
				assert.equal(await client.counter.getOrCreate(key).increment(1), 2);
				await waitFor(() => theirs.seen.includes(2), "count 2 on the still-subscribed connection");
				await sleep(QUIET_MS);
				assert.deepEqual(mine.seen, [1], "an unsubscribed listener still got events");

				// Subscribing again (a new SubscriptionRequest) brings events back.
				const again = record(conn, "count");
				await conn.getCount();
				assert.equal(await conn.increment(1), 3);
				await waitFor(() => again.seen.includes(3), "count 3 after re-subscribing");
				assert.deepEqual(again.seen, [3]);
				assert.deepEqual(mine.seen, [1]);
				await waitFor(() => theirs.seen.includes(3), "count 3 on the second connection");
				assert.deepEqual(theirs.seen, [1, 2, 3]);
			} finally {
				await disposeAll(conn, other);
			}
		});

		test("chatRoom: conn params reach create_conn_state; messages, presence and typing events", CASE, async () => {
			const room = `rt-room-${encoding}-${RUN}`;
			const ann = client.chatRoom.getOrCreate([room], { params: { name: "ann" } }).connect();
			const annLog = watch(ann);
			let bob;
			try {
				const annMessages = record(ann, "message");
				const annPresence = record(ann, "presence");
				const annTyping = record(ann, "typing");
				await opened(ann, annLog, "ann's connection");
				assert.deepEqual(await ann.members(), ["ann"]);

				bob = client.chatRoom.getOrCreate([room], { params: { name: "bob" } }).connect();
				const bobLog = watch(bob);
				const bobMessages = record(bob, "message");
				const bobTyping = record(bob, "typing");
				await opened(bob, bobLog, "bob's connection");

				// Ann sees bob join (on_connect broadcasts the members).
				await waitFor(
					() => annPresence.seen.some(sameMembers(["ann", "bob"])),
					`presence [ann, bob] on ann's connection (got ${JSON.stringify(annPresence.seen)})`,
				);
				// The names come from the conn params, through create_conn_state.
				assert.deepEqual(await ann.members(), ["ann", "bob"]);
				assert.deepEqual(await bob.members(), ["ann", "bob"]);

				const sent = await withTimeout(bob[SEND_ACTION]("  hi  "), `bob's ${SEND_ACTION}`);
				assert.equal(sent.name, "bob");
				assert.equal(sent.text, "hi");
				assert.equal(typeof sent.id, "string");
				await waitFor(() => annMessages.seen.length > 0, '"message" on ann\'s connection');
				assert.deepEqual(annMessages.seen, [sent]);
				await waitFor(() => bobMessages.seen.length > 0, '"message" on bob\'s own connection');
				assert.deepEqual(bobMessages.seen, [sent]);
				assert.deepEqual(await ann.history(), [sent]);

				await ann.typing(true);
				await waitFor(() => bobTyping.seen.length > 0, '"typing" on bob\'s connection');
				assert.deepEqual(bobTyping.seen, [{ name: "ann", typing: true }]);

				// An action error over the socket reaches only the caller, which stays connected.
				const empty = await rejectsWithActorError(bob[SEND_ACTION]("   "), "an empty message");
				assert.equal(`${empty.group}.${empty.code}`, "user.empty_message");
				assert.equal(bob.connStatus, "connected");

				// Bob leaves cleanly: ann sees the presence change and his typing stop.
				await withTimeout(bob.dispose(), "bob.dispose()");
				assert.equal(bob.connStatus, "idle");
				assert.equal(bobLog.closes, 1, "onClose after dispose of an open connection");
				await waitFor(
					() => annPresence.seen.some(sameMembers(["ann"])),
					`presence [ann] after bob left (got ${JSON.stringify(annPresence.seen)})`,
				);
				await waitFor(
					() => annTyping.seen.some((t) => t?.name === "bob" && t.typing === false),
					`typing {bob, false} after bob left (got ${JSON.stringify(annTyping.seen)})`,
				);
				assert.deepEqual(await ann.members(), ["ann"]);
				assert.deepEqual(annLog.errors, []);
			} finally {
				await disposeAll(ann, bob);
			}
		});

		test("chatRoom: stateless calls carry conn params to the connect hooks", CASE, async () => {
			const room = `rt-stateless-${encoding}-${RUN}`;
			const withName = client.chatRoom.getOrCreate([room], { params: { name: "cy" } });
			const posted = await withName[SEND_ACTION]("over http");
			assert.equal(posted.name, "cy");
			assert.deepEqual(await withName.history(), [posted]);

			// Without params on_before_connect refuses the short-lived connection too.
			const refused = await rejectsWithActorError(client.chatRoom.getOrCreate([room]).history(), "history() without a name");
			assert.equal(refused.group, "user");
			assert.equal(refused.code, "name_required");
			assert.equal(refused.message, "A name is required to join the room");
		});

		for (const [label, name, code, metadata] of [
			["an empty name", "", "name_required", undefined],
			["an over-long name", "x".repeat(40), "name_too_long", { max: 32 }],
		]) {
			test(`on_before_connect refuses ${label}: onError, rejected action, not connected, no retry`, CASE, async () => {
				const room = `rt-refuse-${encoding}-${RUN}`;
				const conn = client.chatRoom.getOrCreate([room], { params: { name } }).connect();
				const log = watch(conn);
				// Queued before the socket opens; the refusal must reject it.
				const pending = conn.members();
				pending.catch(() => {});
				try {
					const actionError = await rejectsWithActorError(pending, "an action on a refused connection");
					assert.equal(`${actionError.group}.${actionError.code}`, `user.${code}`, actionError.message);

					await waitFor(() => log.errors.length > 0, "onError after the refusal");
					for (const error of log.errors) {
						assert.equal(`${error.group}.${error.code}`, `user.${code}`, error.message);
					}
					// The Error message (not only the close reason) carried message and metadata.
					const full = log.errors.find((e) => !e.message.startsWith("Connection closed"));
					assert.ok(full, `no onError carried the server's message: ${log.errors.map((e) => e.message)}`);
					if (code === "name_required") {
						assert.equal(full.message, "A name is required to join the room");
					} else {
						assert.equal(full.message, "Names are at most 32 characters");
					}
					if (metadata !== undefined) assert.deepEqual(full.metadata, metadata);

					// Let the close frame arrive and any retry show itself.
					await sleep(QUIET_MS * 2);
					assert.equal(log.opens, 0, "onOpen fired for a refused connection");
					assert.equal(log.closes, 0, "onClose fired although the connection never opened");
					assert.ok(!log.statuses.includes("connected"), `statuses ${log.statuses}`);
					assert.ok(!log.statuses.includes("connecting"), `the client retried: statuses ${log.statuses}`);
					assert.ok(["idle", "disconnected"].includes(conn.connStatus), `connStatus ${conn.connStatus}`);

					// The room never saw the refused person.
					const members = await client.chatRoom.getOrCreate([room], { params: { name: "dee" } }).members();
					assert.deepEqual(members, ["dee"]);
				} finally {
					await disposeAll(conn);
				}
				assert.equal(conn.connStatus, "idle");
			});
		}

		test("raw HTTP through handle.fetch", CASE, async () => {
			const key = ["rt-fetch", encoding, RUN];
			const handle = client.counter.getOrCreate(key);
			assert.equal(await handle.increment(4), 4);

			const get = await handle.fetch("/count");
			assert.equal(get.status, 200);
			assert.match(get.headers.get("content-type") ?? "", /application\/json/);
			assert.deepEqual(await get.json(), { count: 4, method: "GET" });

			const post = await handle.fetch("/count?x=1", {
				method: "POST",
				headers: { "content-type": "application/json" },
				body: JSON.stringify({ hello: "world" }),
			});
			assert.equal(post.status, 200);
			assert.deepEqual(await post.json(), { count: 4, method: "POST" });

			// A Request object works too (its path is taken from the URL).
			const viaRequest = await handle.fetch(new Request("http://ignored.example/count", { method: "PUT", body: "x" }));
			assert.equal(viaRequest.status, 200);
			assert.deepEqual(await viaRequest.json(), { count: 4, method: "PUT" });

			// The actor's own 404 comes back as is.
			const missing = await handle.fetch("/nope");
			assert.equal(missing.status, 404);
			assert.deepEqual(await missing.json(), { error: "not found", path: "/nope" });
		});

		test("raw WebSocket through handle.webSocket: welcome, text echo, binary echo, count", CASE, async () => {
			const key = ["rt-ws", encoding, RUN];
			const handle = client.counter.getOrCreate(key);
			assert.equal(await handle.increment(6), 6);

			const ws = await withTimeout(handle.webSocket("/echo"), "handle.webSocket()");
			const messages = [];
			let closed;
			let errored = false;
			ws.addEventListener("message", (event) => messages.push(event.data));
			ws.addEventListener("close", (event) => {
				closed = { code: event.code, reason: event.reason, wasClean: event.wasClean };
			});
			ws.addEventListener("error", () => {
				errored = true;
			});
			try {
				await waitFor(() => messages.length >= 1 || closed, "the welcome message");
				assert.equal(closed, undefined, `the socket closed: ${JSON.stringify(closed)}`);
				assert.equal(messages[0], "welcome /echo");

				ws.send("hello");
				await waitFor(() => messages.length >= 2, "the text echo");
				assert.equal(messages[1], "hello");

				const bytes = new Uint8Array([0, 1, 2, 250, 255]);
				ws.send(bytes);
				await waitFor(() => messages.length >= 3, "the binary echo");
				assert.notEqual(typeof messages[2], "string", "binary came back as text");
				assert.deepEqual(new Uint8Array(messages[2]), bytes);

				ws.send("count");
				await waitFor(() => messages.length >= 4, "the count answer");
				assert.equal(messages[3], "6");

				ws.close(1000, "bye");
				await waitFor(() => closed, "the close event");
				assert.equal(closed.code, 1000);
				assert.equal(errored, false);
				assert.equal(messages.length, 4);
			} finally {
				if (!closed) ws.close();
			}
		});

		test("dispose closes cleanly and later actions reject", CASE, async () => {
			const key = ["rt-dispose", encoding, RUN];
			const conn = client.counter.getOrCreate(key).connect();
			const log = watch(conn);
			try {
				const events = record(conn, "count");
				await opened(conn, log, "the connection");
				assert.equal(await conn.increment(1), 1);
				await waitFor(() => events.seen.includes(1), "count 1");
			} finally {
				await withTimeout(conn.dispose(), "dispose()");
			}
			assert.equal(conn.connStatus, "idle");
			assert.deepEqual(log.statuses, ["connected", "idle"]);
			assert.equal(log.closes, 1);
			assert.deepEqual(log.errors, []);
			await assert.rejects(conn.getCount(), (error) => error?.code === "disposed" || /dispos/i.test(String(error)));
			// Disposing twice is harmless.
			await withTimeout(conn.dispose(), "a second dispose()");
			// The actor is fine and the server saw no error from the closed socket.
			await sleep(QUIET_MS);
			assert.deepEqual(log.statuses, ["connected", "idle"], "status changed after dispose");
			assert.equal(await client.counter.getOrCreate(key).getCount(), 1);
		});
	});
}

test("no unhandled promise rejections", () => {
	assert.deepEqual(
		unhandled.map((reason) => String(reason?.stack ?? reason)),
		[],
	);
});
