import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { OrderConfirmedSchema } from "@trellis/gen/trellis/core/v1/events_pb.js";
import { eventHeaders } from "@trellis/kit/events.js";
import { connectNats } from "@trellis/kit/nats.js";
import { eventually, startNatsServer, type TestNatsServer, uniqueName } from "@trellis/kit/testing.js";
import type { NatsConnection } from "nats";
import { type ClickHouse, createServerClickHouse } from "../src/clickhouse.ts";
import { createIngest, encodeIngestMessage, type IngestOptions } from "../src/ingest.ts";
import type { EventInput } from "../src/model.ts";
import { type AnalyticsStore, createAnalyticsStore, type RowBlock, toRowBlocks } from "../src/store.ts";
import { clientEvents, DAY, T0 } from "./fixtures.ts";

const CLICKHOUSE_URL = process.env.TEST_CLICKHOUSE_URL ?? "http://127.0.0.1:8123";

describe("ingestion pipeline (JetStream → ClickHouse)", () => {
  let nats: TestNatsServer;
  let ch: ClickHouse;
  let store: AnalyticsStore;
  const open: NatsConnection[] = [];
  const connect = async () => {
    const nc = await connectNats(nats.url, { name: "analytics-test" });
    open.push(nc);
    return nc;
  };
  const base = (
    nc: NatsConnection,
    stream: string,
    s: Pick<AnalyticsStore, "insertBlocks"> = store,
  ): IngestOptions => ({
    nats: nc,
    store: s,
    stream,
    subject: `analytics.ingest.${stream}`,
    ackWaitMs: 1500,
    flushIntervalMs: 100,
  });
  // Counted twice: from the raw table (deduplicating at query time) and from the rollup (which
  // relies on copies never being written); both must agree.
  const count = async (tenantId: string) => {
    const live = await store.liveCounts(tenantId, [], T0, T0 + 3_600_000);
    const raw = [...live.values()].reduce((a, b) => a + b, 0);
    const q = {
      target: { metric: "all_events" as const },
      startMs: T0,
      endMs: T0 + 3_600_000,
      bucket: "hour" as const,
      aggregation: "count" as const,
    };
    const rollup = await store.queryMetrics(tenantId, q);
    assert.equal(rollup.source, "rollup");
    assert.equal(rollup.series[0]?.points[0]?.value, raw);
    return raw;
  };
  // Everything delivered was acknowledged: nothing pending, nothing in flight.
  const drained = async (nc: NatsConnection, stream: string) => {
    const info = await (await nc.jetstreamManager()).consumers.info(stream, "analytics");
    return info.num_pending === 0 && info.num_ack_pending === 0;
  };
  const events = (tenantId: string, seed: number, n: number): EventInput[] =>
    clientEvents(tenantId, seed, n).map((e, i) => ({
      ...e,
      timeMs: T0 + i * 1000,
      receivedAtMs: T0 + i * 1000,
    }));
  const hanging = (calls: { n: number }, write?: AnalyticsStore) => ({
    async insertBlocks(batch: readonly RowBlock[]) {
      calls.n += 1;
      if (write) await write.insertBlocks(batch);
      return new Promise<number>(() => {}); // the process "dies" here
    },
  });

  before(async () => {
    nats = await startNatsServer("/usr/sbin/nats-server");
    ch = createServerClickHouse(CLICKHOUSE_URL);
    store = createAnalyticsStore({ clickhouse: ch, database: uniqueName("analytics_ingest") });
    await store.migrate();
  });

  after(async () => {
    for (const nc of open) if (!nc.isClosed()) await nc.close();
    await store?.dropDatabase();
    await ch?.close();
    await nats?.dispose();
  });

  for (const crashAfterInsert of [false, true]) {
    test(`exact counts after a crash ${crashAfterInsert ? "after the insert, before the ack" : "between accept and flush"}`, async () => {
      const tenant = uniqueName("tenant");
      const stream = uniqueName("INGEST").toUpperCase();
      const nc1 = await connect();
      const calls = { n: 0 };
      const first = createIngest(base(nc1, stream, hanging(calls, crashAfterInsert ? store : undefined)));
      await first.ensureStream();
      await first.start();
      const all = events(tenant, 21, 600);
      await first.accept(all.slice(0, 250)); // TrackBatch
      await first.accept(all.slice(250, 500));
      await first.accept(all.slice(0, 250)); // a client retry of the first batch
      for (const e of all.slice(500)) await first.accept([e]); // Track
      await first.accept([all[0] as EventInput, all[599] as EventInput]); // repeated ids in a later batch
      await eventually(() => calls.n > 0, { what: "the consumer to try a flush" });
      await nc1.close(); // crash: nothing was acknowledged
      void first.stop(); // never settles (its insert hangs); only releases nats.js's heartbeat timer

      const nc2 = await connect();
      const second = createIngest(base(nc2, stream));
      await second.start();
      await eventually(() => drained(nc2, stream), { timeoutMs: 20_000, what: "redelivery and acks" });
      assert.equal(await count(tenant), 600);
      await second.stop();
    });
  }

  test("a full buffer answers ResourceExhausted, and accepts again once drained", async () => {
    const tenant = uniqueName("tenant");
    const stream = uniqueName("INGEST").toUpperCase();
    const nc = await connect();
    const ingest = createIngest({ ...base(nc, stream), maxBufferedMessages: 3 });
    await ingest.ensureStream();
    const all = events(tenant, 31, 4);
    for (const e of all.slice(0, 3)) await ingest.accept([e]);
    await assert.rejects(
      ingest.accept([all[3] as EventInput]),
      (e: unknown) => e instanceof ConnectError && e.code === Code.ResourceExhausted,
    );
    await ingest.start();
    await eventually(() => drained(nc, stream), { what: "the buffer to drain" });
    await ingest.accept([all[3] as EventInput]);
    await eventually(async () => (await count(tenant)) === 4, { what: "4 events" });
    await ingest.stop();
  });

  test("a batch larger than a NATS message is split, and every event lands once", async () => {
    const tenant = uniqueName("tenant");
    const stream = uniqueName("INGEST").toUpperCase();
    const nc = await connect();
    const ingest = createIngest(base(nc, stream));
    await ingest.ensureStream();
    // 1000 events of ~1.1 KB: more than the server's 1 MiB max_payload in one message.
    const all = events(tenant, 51, 1000).map((e) => ({ ...e, props: { note: "n".repeat(1000) } }));
    await ingest.accept(all);
    const info = await (await nc.jetstreamManager()).streams.info(stream);
    assert.ok(info.state.messages >= 2, `split into ${info.state.messages} messages`);
    await ingest.start();
    await eventually(async () => (await count(tenant)) === 1000, { what: "1000 events" });
    await ingest.accept(all.slice(0, 10)); // a retry of part of it adds nothing
    await eventually(() => drained(nc, stream), { what: "the retry to be consumed" });
    assert.equal(await count(tenant), 1000);
    await ingest.stop();
  });

  test("messages of the earlier format are still read; a malformed one is dropped, not retried", async () => {
    const tenant = uniqueName("tenant");
    const stream = uniqueName("INGEST").toUpperCase();
    const nc = await connect();
    const options = base(nc, stream);
    const ingest = createIngest(options);
    await ingest.ensureStream();
    const js = nc.jetstream();
    const subject = options.subject as string;
    const [a, b, c] = events(tenant, 61, 3) as [EventInput, EventInput, EventInput];
    // Version 1, as an instance before row blocks wrote it.
    await js.publish(subject, Buffer.from(JSON.stringify({ v: 1, events: [a, b] })));
    // Version 2 whose rows do not match its ids: poison.
    const good = encodeIngestMessage(toRowBlocks([c])[0] as RowBlock);
    const text = Buffer.from(good).toString();
    await js.publish(subject, Buffer.from(text.replace('"ids":[', '"ids":["extra",')));
    await js.publish(subject, good);
    // ANALYTICS_INGEST_FORMAT=v1 (the first phase of a rolling upgrade) writes version 1.
    const v1 = createIngest({ ...options, format: "v1" });
    const [d, e] = events(tenant, 62, 2) as [EventInput, EventInput];
    await v1.accept([d, e, d]);
    const jsm = await nc.jetstreamManager();
    const last = await jsm.streams.getMessage(stream, { last_by_subj: subject });
    assert.equal(JSON.parse(Buffer.from(last.data).toString()).v, 1);
    await ingest.start();
    await eventually(async () => (await count(tenant)) === 5, { what: "5 events" });
    await eventually(() => drained(nc, stream), { what: "the malformed message to be terminated" });
    assert.equal(await count(tenant), 5);
    await ingest.stop();
  });

  test("invalid events are refused before they are buffered", async () => {
    const nc = await connect();
    const ingest = createIngest(base(nc, uniqueName("INGEST").toUpperCase()));
    await ingest.ensureStream();
    const [e] = events(uniqueName("tenant"), 41, 1) as [EventInput];
    await assert.rejects(
      ingest.accept([{ ...e, name: "x' OR 1=1 --" }]),
      (err: unknown) => err instanceof ConnectError && err.code === Code.InvalidArgument,
    );
  });

  test("domain events of other streams are stored once, with payload and properties", async () => {
    const tenant = uniqueName("tenant");
    const nc = await connect();
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: "CORE", subjects: ["trellis.core.>"] });
    const js = nc.jetstream();
    const publish = async (id: string, msgId: string, amount: bigint, currency: string) => {
      const body = create(OrderConfirmedSchema, {
        tenantId: tenant,
        orderId: `ord-${id}`,
        userId: "user-1",
        total: { amountMinor: amount, currency },
        confirmTime: timestampFromMs(T0 + DAY + 5000),
      });
      const headers = eventHeaders({
        id,
        type: OrderConfirmedSchema.typeName,
        service: "core",
        time: new Date(T0 + DAY + 5000),
      });
      headers.set("Nats-Msg-Id", msgId);
      await js.publish("trellis.core.order.confirmed", toBinary(OrderConfirmedSchema, body), { headers });
    };
    await publish("e1", "e1", 1999n, "USD");
    await publish("e1", "e1-again", 1999n, "USD"); // the same event published twice (ce-id e1)
    await publish("e2", "e2", 500n, "EUR");
    await publish("e3", "e3", 1n, "USD");
    const ingest = createIngest({ ...base(nc, uniqueName("INGEST").toUpperCase()), domainStreams: ["CORE"] });
    await ingest.ensureStream();
    await ingest.start();
    const q = {
      target: { metric: "order_revenue" as const },
      startMs: T0,
      endMs: T0 + 2 * DAY,
      bucket: "day" as const,
      aggregation: "count" as const,
    };
    const result = await eventually(
      async () => {
        const r = await store.queryMetrics(tenant, q);
        return r.series.length === 2 ? r : undefined;
      },
      { what: "revenue series" },
    );
    assert.deepEqual(
      result.series.map((s) => [s.group, s.points.map((p) => p.value)]),
      [
        ["USD", [0, 2000]],
        ["EUR", [0, 500]],
      ],
    );
    await ingest.stop();
  });
});
