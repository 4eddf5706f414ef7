import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ThingHappenedSchema } from "@trellis/gen/trellis/testing/v1/testing_pb.js";
import type { JetStreamManager, NatsConnection } from "nats";
import { decodeEvent, type EventConsumer, type ReceivedEvent, startConsumer } from "../src/consumer.js";
import { createDb, type Db } from "../src/db.js";
import { eventHeaders, uuidv7 } from "../src/events.js";
import { KIT_MIGRATIONS_DIR, migrate } from "../src/migrate.js";
import { connectNats, ensureStream } from "../src/nats.js";
import { enqueue } from "../src/outbox.js";
import { startRelay } from "../src/relay.js";
import { createTestDatabase, eventually, type TestDatabase, uniqueName } from "../src/testing.js";

const DATABASE_URL = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const NATS_URL = process.env.TEST_NATS_URL ?? "nats://127.0.0.1:4222";
const TYPE = ThingHappenedSchema.typeName;

describe("consumer", () => {
  let db: TestDatabase;
  let sql: Db;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const streams: string[] = [];
  const consumers: EventConsumer[] = [];

  /** A fresh stream over a unique subject prefix, and its dead-letter stream. */
  async function scope() {
    const prefix = `t${randomBytes(5).toString("hex")}`;
    const stream = uniqueName("CONSUMER_TEST");
    const dlq = uniqueName("DLQ_TEST");
    streams.push(stream, dlq);
    await ensureStream(jsm, { name: stream, subjects: [`${prefix}.>`] });
    await ensureStream(jsm, { name: dlq, subjects: [`deadletter.${prefix}.>`] });
    return { prefix, subject: `${prefix}.thing.happened`, stream, dlq, durable: uniqueName("durable") };
  }

  async function publishThing(subject: string, id: string, msgID: string, thingId: string) {
    const data = toBinary(ThingHappenedSchema, create(ThingHappenedSchema, { thingId, seq: 1n }));
    const headers = eventHeaders({ id, type: TYPE, service: "testing", time: new Date() });
    await nc.jetstream().publish(subject, data, { headers, msgID });
  }

  async function effects(table: string): Promise<number> {
    const [row] = await sql<{ n: number }[]>`select count(*)::int as n from ${sql(table)}`;
    return row?.n ?? -1;
  }

  async function idle(stream: string, durable: string) {
    await eventually(
      async () => {
        const info = await jsm.consumers.info(stream, durable);
        return info.num_pending === 0 && info.num_ack_pending === 0;
      },
      { what: "consumer idle" },
    );
  }

  before(async () => {
    db = await createTestDatabase("trellis_consumer", DATABASE_URL);
    sql = createDb(db.url, { max: 4, service: "consumer-test" });
    await migrate(sql, { dir: KIT_MIGRATIONS_DIR, service: "kit" });
    nc = await connectNats(NATS_URL, { name: "consumer-test" });
    jsm = await nc.jetstreamManager();
  });

  after(async () => {
    await Promise.all(consumers.map((c) => c.stop()));
    for (const name of streams) await jsm.streams.delete(name).catch(() => {});
    await nc.close();
    await sql.end();
    await db.drop();
  });

  test("an event travels outbox → relay → consumer with its id, type, time and traceparent", async () => {
    const { subject, stream, durable } = await scope();
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const received: ReceivedEvent[] = [];
    const consumer = await startConsumer({
      nats: nc,
      sql,
      stream,
      durable,
      filterSubjects: [subject],
      handler: async (_tx, event) => {
        received.push(event);
      },
    });
    consumers.push(consumer);
    const relay = await startRelay({ sql, nats: nc, service: "testing" });
    const id = await sql.begin((tx) =>
      enqueue(tx, ThingHappenedSchema, create(ThingHappenedSchema, { thingId: "traced", seq: 7n }), {
        subject,
        injectTrace: (h) => {
          h.traceparent = traceparent;
        },
      }),
    );
    await relay.flush();
    await relay.stop();
    await eventually(() => received.length === 1, { what: "event handled" });

    const [event] = received;
    assert.ok(event);
    assert.equal(event.id, id);
    assert.equal(event.type, TYPE);
    assert.equal(event.source, "trellis/testing");
    assert.equal(event.subject, subject);
    assert.equal(event.headers.traceparent, traceparent);
    assert.ok(!Number.isNaN(event.time.getTime()));
    const thing = decodeEvent(ThingHappenedSchema, event);
    assert.equal(thing.thingId, "traced");
    assert.equal(thing.seq, 7n);
    await consumer.stop();
  });

  test("the same event delivered twice applies its effect once", async () => {
    const { subject, stream, durable } = await scope();
    const table = uniqueName("effects");
    await sql`create table ${sql(table)} (event_id text not null, thing_id text not null)`;
    let calls = 0;
    const start = () =>
      startConsumer({
        nats: nc,
        sql,
        stream,
        durable,
        filterSubjects: [subject],
        handler: async (tx, event) => {
          calls++;
          const thing = decodeEvent(ThingHappenedSchema, event);
          await tx`insert into ${tx(table)} (event_id, thing_id) values (${event.id}, ${thing.thingId})`;
        },
      });
    const consumer = await start();
    consumers.push(consumer);

    // Two copies JetStream cannot de-duplicate (different Nats-Msg-Id), one event (same ce-id).
    const id = uuidv7();
    await publishThing(subject, id, `${id}-a`, "once");
    await publishThing(subject, id, `${id}-b`, "once");
    assert.equal((await jsm.streams.info(stream)).state.messages, 2);
    await idle(stream, durable);
    assert.equal(await effects(table), 1);
    assert.equal(calls, 1);
    await consumer.stop();

    // A restarted consumer (same durable) given a third copy still applies nothing new.
    const restarted = await start();
    consumers.push(restarted);
    await publishThing(subject, id, `${id}-c`, "once");
    await idle(stream, durable);
    assert.equal(await effects(table), 1);
    assert.equal(calls, 1);
    await restarted.stop();
  });

  test("a handler that fails once is retried and its effect applied once", async () => {
    const { subject, stream, durable } = await scope();
    const table = uniqueName("effects");
    await sql`create table ${sql(table)} (event_id text not null)`;
    let calls = 0;
    const consumer = await startConsumer({
      nats: nc,
      sql,
      stream,
      durable,
      filterSubjects: [subject],
      retryDelayMs: 20,
      handler: async (tx, event) => {
        calls++;
        // The effect is written before the failure, so the rollback must undo it.
        await tx`insert into ${tx(table)} (event_id) values (${event.id})`;
        if (calls === 1) throw new Error("transient");
      },
    });
    consumers.push(consumer);
    await publishThing(subject, uuidv7(), uuidv7(), "retried");
    await idle(stream, durable);
    assert.equal(calls, 2);
    assert.equal(await effects(table), 1);
    await consumer.stop();
  });

  test("a handler that always throws ends on the dead-letter subject after maxDeliver and is not redelivered", async () => {
    const { prefix, subject, stream, dlq, durable } = await scope();
    const maxDeliver = 3;
    const attempts = new Map<string, number>();
    const consumer = await startConsumer({
      nats: nc,
      sql,
      stream,
      durable,
      filterSubjects: [subject],
      maxDeliver,
      retryDelayMs: 20,
      maxRetryDelayMs: 50,
      handler: async (_tx, event) => {
        attempts.set(event.id, (attempts.get(event.id) ?? 0) + 1);
        if (decodeEvent(ThingHappenedSchema, event).thingId === "poison") throw new Error("cannot apply");
      },
    });
    consumers.push(consumer);
    const poison = uuidv7();
    await publishThing(subject, poison, poison, "poison");
    await eventually(async () => (await jsm.streams.info(dlq)).state.messages === 1, { what: "dead letter" });

    const dead = await jsm.streams.getMessage(dlq, { seq: 1 });
    assert.equal(dead.subject, `deadletter.${subject}`);
    assert.ok(dead.subject.startsWith(`deadletter.${prefix}.`));
    assert.equal(dead.header.get("ce-id"), poison);
    assert.ok(dead.header.get("trellis-error"));
    assert.equal(dead.header.get("trellis-deliveries"), String(maxDeliver));
    assert.equal(fromBinary(ThingHappenedSchema, dead.data).thingId, "poison");

    // Terminated: nothing is left pending or awaiting ack, and a later event still flows.
    const healthy = uuidv7();
    await publishThing(subject, healthy, healthy, "healthy");
    await idle(stream, durable);
    const info = await jsm.consumers.info(stream, durable);
    assert.equal(info.num_redelivered, 0);
    assert.equal(attempts.get(poison), maxDeliver);
    assert.equal(attempts.get(healthy), 1);
    assert.equal((await jsm.streams.info(dlq)).state.messages, 1);
    await consumer.stop();
  });
});
