// The official RivetKit client (npm `rivetkit`, pinned in package.json) against a
// live rivet_django server: the demo project's `counter` actor
// (demo_project/counter/actors.py).
//
//   RIVET_ENDPOINT=http://127.0.0.1:8000/api/rivet node --test
//
// tests/test_js_client.py starts the server and runs this file. Every case runs
// once per wire encoding the client supports (json, cbor and the default, bare).

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
const RUN = randomUUID().slice(0, 8);
// The client retries some failures forever (e.g. the /metadata bootstrap): a
// bounded time per case turns a hang into a failure that names the case.
const CASE = { timeout: 30_000 };

/** Awaits `promise`, expecting an ActorError (RivetError); returns it. */
async function rejectsWithActorError(promise) {
	try {
		const value = await promise;
		assert.fail(`expected an ActorError, got the value ${JSON.stringify(value)}`);
	} catch (error) {
		if (error instanceof assert.AssertionError) throw error;
		assert.equal(
			typeof error?.group,
			"string",
			`expected an ActorError with group/code, got ${error?.stack ?? error}`,
		);
		assert.equal(typeof error.code, "string", `expected an ActorError with a code, got ${error?.stack ?? error}`);
		return error;
	}
}

for (const encoding of ["json", "cbor", "bare"]) {
	describe(`counter over ${encoding}`, () => {
		const client = createClient({ endpoint, encoding });
		after(() => client.dispose());

		// A compound key whose parts need escaping in the key string (PROTOCOL.md 2).
		const key = ["js", "a/b", encoding, RUN];
		const createKey = ["js-create", encoding, RUN];

		test("getOrCreate + increment + getCount", CASE, async () => {
			const counter = client.counter.getOrCreate(key);
			assert.equal(await counter.increment(5), 5);
			assert.equal(await counter.increment(5), 10);
			assert.equal(await counter.getCount(), 10);
			// A second handle for the same key reaches the same actor.
			assert.equal(await client.counter.getOrCreate(key).getCount(), 10);
		});

		test("create with input, then duplicate create fails", CASE, async () => {
			const created = await client.counter.create(createKey, { input: { start: 7 } });
			assert.deepEqual(await created.getInput(), { start: 7 });
			assert.equal(await created.getCount(), 7);

			const error = await rejectsWithActorError(client.counter.create(createKey, { input: { start: 1 } }));
			assert.equal(error.code, "duplicate_key", `${error.group}.${error.code}: ${error.message}`);
			assert.equal(error.group, "actor");
			// The first actor is untouched.
			assert.equal(await client.counter.get(createKey).getCount(), 7);
		});

		test("getOrCreate with createWithInput (rvt-input)", CASE, async () => {
			const input = { start: 3, note: "héllo/wörld" };
			const counter = client.counter.getOrCreate(["js-input", encoding, RUN], { createWithInput: input });
			assert.deepEqual(await counter.getInput(), input);
			assert.equal(await counter.getCount(), 3);
		});

		test("getForId reaches the created actor", CASE, async () => {
			const viaKey = client.counter.get(createKey);
			const actorId = await viaKey.resolve();
			assert.equal(typeof actorId, "string");
			assert.ok(actorId.length > 0);
			const viaId = client.counter.getForId(actorId);
			assert.equal(await viaId.resolve(), actorId);
			assert.equal(await viaId.getCount(), 7);
			assert.equal(await viaId.increment(1), 8);
			assert.equal(await viaKey.getCount(), 8);

			// Resolving the compound key with "/" goes through the REST key string
			// form (`js/a\/b/...`); the id reaches the same actor as the key.
			const slashId = await client.counter.getOrCreate(key).resolve();
			assert.notEqual(slashId, actorId);
			assert.equal(await client.counter.getForId(slashId).getCount(), 10);
			assert.equal(await client.counter.get(key).resolve(), slashId);
		});

		test("get of a missing key fails with not_found", CASE, async () => {
			const missing = client.counter.get(["js-missing", encoding, RUN]);
			const error = await rejectsWithActorError(missing.getCount());
			assert.equal(error.code, "not_found", `${error.group}.${error.code}: ${error.message}`);
			assert.equal(error.group, "actor");
		});

		test("UserError reaches the caller with group, code and metadata", CASE, async () => {
			const counter = client.counter.getOrCreate(key);
			const error = await rejectsWithActorError(counter.fail("my_code"));
			assert.equal(error.group, "user");
			assert.equal(error.code, "my_code");
			assert.equal(error.message, "Counting failed on purpose");
			assert.deepEqual(error.metadata, { count: 10 });
		});

		test("an unexpected exception is masked as internal_error", CASE, async () => {
			const counter = client.counter.getOrCreate(key);
			const error = await rejectsWithActorError(counter.crash());
			assert.equal(error.code, "internal_error", `${error.group}.${error.code}: ${error.message}`);
			assert.ok(!error.message.includes("secret"), `internal detail leaked: ${error.message}`);
			assert.ok(!JSON.stringify(error.metadata ?? null).includes("secret"), "internal detail leaked in metadata");
			// The actor survives the crash.
			assert.equal(await counter.getCount(), 10);
		});

		test("connection: actions, events and errors over WebSocket", CASE, async () => {
			const conn = client.counter.getOrCreate(key).connect();
			try {
				const events = [];
				const eleven = new Promise((resolve) => {
					conn.on("count", (count) => {
						events.push(count);
						if (count === 11) resolve();
					});
				});
				assert.equal(await conn.increment(1), 11);
				await eleven;
				assert.deepEqual(events, [11]);
				assert.equal(await conn.getCount(), 11);

				const error = await rejectsWithActorError(conn.fail("ws_code"));
				assert.equal(error.group, "user");
				assert.equal(error.code, "ws_code");
				assert.deepEqual(error.metadata, { count: 11 });
				// The connection survives an action error.
				assert.equal(await conn.getCount(), 11);
			} finally {
				await conn.dispose();
			}
		});

		test("echo round-trips values", CASE, async () => {
			const values = ["text", 42, 1.5, true, null, [1, "two"], { nested: { a: [] } }];
			assert.deepEqual(await client.counter.getOrCreate(key).echo(...values), values);
		});
	});
}
