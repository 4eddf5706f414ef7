import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { create, fromBinary } from "@bufbuild/protobuf";
import { EchoRequestSchema, ThingHappenedSchema } from "@trellis/gen/trellis/testing/v1/testing_pb.js";
import type { JetStreamManager, NatsConnection, StoredMsg } from "nats";
import { createDb, type Db } from "../src/db.js";
import { eventSubject, uuidv7 } from "../src/events.js";
import { KIT_MIGRATIONS_DIR, migrate } from "../src/migrate.js";
import { connectNats } from "../src/nats.js";
import { enqueue } from "../src/outbox.js";
import { type Relay, startRelay } from "../src/relay.js";
import {
  createTestDatabase,
  eventually,
  startNatsServer,
  type TestDatabase,
  uniqueName,
} from "../src/testing.js";

const DATABASE_URL = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const NATS_URL = process.env.TEST_NATS_URL ?? "nats://127.0.0.1:4222";

/** A unique subject prefix and stream for one test. */
function scope() {
  const prefix = `t${randomBytes(5).toString("hex")}`;
  return {
    subject: `${prefix}.thing.happened`,
    stream: { name: uniqueName("OUTBOX_TEST"), subjects: [`${prefix}.>`] },
  };
}

async function storedMessages(jsm: JetStreamManager, stream: string): Promise<StoredMsg[]> {
  const info = await jsm.streams.info(stream);
  const out: StoredMsg[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    out.push(await jsm.streams.getMessage(stream, { seq }));
  }
  return out;
}

async function enqueueThing(sql: Db, subject: string, seq: number): Promise<string> {
  return sql.begin((tx) =>
    enqueue(
      tx,
      ThingHappenedSchema,
      create(ThingHappenedSchema, { thingId: `thing-${seq}`, seq: BigInt(seq) }),
      {
        subject,
      },
    ),
  );
}

describe("event envelope", () => {
  test("eventSubject reads the event option and refuses a message that is not an event", () => {
    assert.equal(eventSubject(ThingHappenedSchema), "trellis.testing.thing.happened");
    assert.throws(() => eventSubject(EchoRequestSchema));
  });

  test("uuidv7 ids carry version 7, the RFC variant and sort by creation time", () => {
    const ids = [uuidv7(1_000), uuidv7(2_000), uuidv7(3_000)];
    for (const id of ids)
      assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.deepEqual([...ids].sort(), ids);
    assert.notEqual(uuidv7(1_000), uuidv7(1_000));
  });
});

describe("outbox and relay", () => {
  let db: TestDatabase;
  let sql: Db;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const streams: string[] = [];
  const relays: Relay[] = [];

  before(async () => {
    db = await createTestDatabase("trellis_outbox", DATABASE_URL);
    sql = createDb(db.url, { max: 4, service: "outbox-test" });
    await migrate(sql, { dir: KIT_MIGRATIONS_DIR, service: "kit" });
    nc = await connectNats(NATS_URL, { name: "outbox-test" });
    jsm = await nc.jetstreamManager();
  });

  after(async () => {
    await Promise.all(relays.map((r) => r.stop()));
    for (const name of streams) await jsm.streams.delete(name).catch(() => {});
    await nc.close();
    await sql.end();
    await db.drop();
  });

  test("an event from a rolled-back transaction is never published; a committed one is, with CloudEvents headers", async () => {
    await sql`truncate outbox`;
    const { subject, stream } = scope();
    streams.push(stream.name);
    const relay = await startRelay({ sql, nats: nc, service: "testing", stream });
    relays.push(relay);

    await assert.rejects(
      sql.begin(async (tx) => {
        await enqueue(tx, ThingHappenedSchema, create(ThingHappenedSchema, { thingId: "ghost", seq: 1n }), {
          subject,
        });
        throw new Error("roll back");
      }),
    );
    const id = await sql.begin((tx) =>
      enqueue(tx, ThingHappenedSchema, create(ThingHappenedSchema, { thingId: "real", seq: 2n }), {
        subject,
        headers: { "x-extra": "kept" },
        injectTrace: (h) => {
          h.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        },
      }),
    );
    await relay.flush();

    const messages = await storedMessages(jsm, stream.name);
    assert.equal(messages.length, 1);
    const [msg] = messages;
    assert.ok(msg);
    assert.equal(msg.subject, subject);
    assert.equal(msg.header.get("ce-id"), id);
    assert.equal(msg.header.get("Nats-Msg-Id"), id);
    assert.equal(msg.header.get("ce-specversion"), "1.0");
    assert.equal(msg.header.get("ce-type"), "trellis.testing.v1.ThingHappened");
    assert.equal(msg.header.get("ce-source"), "trellis/testing");
    assert.equal(msg.header.get("content-type"), "application/protobuf");
    assert.ok(!Number.isNaN(Date.parse(msg.header.get("ce-time"))));
    assert.equal(msg.header.get("traceparent"), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert.equal(msg.header.get("x-extra"), "kept");
    assert.equal(fromBinary(ThingHappenedSchema, msg.data).thingId, "real");
    assert.deepEqual(await relay.lag(), { pending: 0, oldestAgeMs: 0 });
    await relay.stop();
  });

  test("with NATS down events pile up, and all are delivered once each when it returns", async () => {
    await sql`truncate outbox`;
    const { subject, stream } = scope();
    const server = await startNatsServer("/usr/sbin/nats-server");
    const local = await connectNats(server.url, { name: "outbox-test-down", reconnectTimeWaitMs: 100 });
    try {
      const relay = await startRelay({
        sql,
        nats: local,
        service: "testing",
        stream,
        pollIntervalMs: 100,
        publishTimeoutMs: 500,
        maxBackoffMs: 300,
      });
      relays.push(relay);
      await relay.flush(); // the stream exists before the outage

      await server.stop();
      const n = 25;
      const ids: string[] = [];
      for (let i = 0; i < n; i++) ids.push(await enqueueThing(sql, subject, i));
      assert.equal((await relay.lag()).pending, n);

      await server.start();
      await eventually(async () => (await relay.lag()).pending === 0, {
        timeoutMs: 30_000,
        what: "outbox drained",
      });

      const localJsm = await local.jetstreamManager();
      const messages = await storedMessages(localJsm, stream.name);
      assert.equal(messages.length, n);
      const seen = new Set(messages.map((m) => m.header.get("ce-id")));
      assert.equal(seen.size, n);
      assert.deepEqual([...seen].sort(), [...ids].sort());
      await relay.stop();
    } finally {
      await local.close();
      await server.dispose();
    }
  });

  test("a row published but not marked sent (crash) is published again and de-duplicated", async () => {
    await sql`truncate outbox`;
    const { subject, stream } = scope();
    streams.push(stream.name);
    const relay = await startRelay({ sql, nats: nc, service: "testing", stream, listen: false });
    relays.push(relay);

    const id = await enqueueThing(sql, subject, 1);
    await relay.flush();
    assert.equal((await jsm.streams.info(stream.name)).state.messages, 1);

    // The crash: the publish happened, the mark was never committed.
    await sql`update outbox set sent_at = null where id = ${id}`;
    assert.equal((await relay.lag()).pending, 1);
    await relay.flush();

    assert.equal((await relay.lag()).pending, 0);
    const messages = await storedMessages(jsm, stream.name);
    assert.deepEqual(
      messages.map((m) => m.header.get("ce-id")),
      [id],
    );
    await relay.stop();
  });
});
