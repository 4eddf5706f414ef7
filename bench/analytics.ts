// Analytics benchmark (issue 6), against the ClickHouse server at TEST_CLICKHOUSE_URL (18.16 here).
// The service runs as a child process (node --import tsx services/analytics/src/main.ts) with a
// private nats-server.
// 1. Ingest: rows per second from the first TrackBatch until every row is in ClickHouse (gRPC
//    frames serialized up front, over one HTTP/2 connection) against POSTing the same events as
//    pre-serialized JSONEachRow batches straight into the same table (same materialized views),
//    with the same batch size and concurrency. Target >= 0.7x.
// 2. QueryMetrics p50 over 1 M and 10 M events (generated server-side with numbers()) against the
//    same SQL text — captured from the store — sent directly over HTTP, interleaved run by run,
//    once ClickHouse has merged the generated parts and after BENCH_QUERY_WARMUP calls each way per
//    size (the rollup query: the same code path, and cheap), so
//    both sides are measured with their code compiled, as in a service taking traffic; with ~20
//    calls the service's query path still runs in V8's interpreter (measured: +2–3 ms).
//    Target <= 1.2x or <= +5 ms.
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { Agent, request as httpRequest } from "node:http";
import { connect as h2connect } from "node:http2";
import { cpus, loadavg } from "node:os";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  Aggregation,
  AnalyticsService,
  Bucket,
  FilterOp,
  FilterSchema,
  type QueryMetricsRequest,
  QueryMetricsRequestSchema,
  QueryMetricsResponseSchema,
  TrackBatchRequestSchema,
} from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { createTestIssuer } from "@trellis/kit/test-tokens.js";
import { eventually, freePort, startNatsServer, uniqueName } from "@trellis/kit/testing.js";
import { createKitValidator } from "@trellis/kit/validation.js";
import { type ClickHouse, createServerClickHouse } from "../services/analytics/src/clickhouse.ts";
import { metricsQuery } from "../services/analytics/src/convert.ts";
import { tablesOf } from "../services/analytics/src/schema.ts";
import { sql } from "../services/analytics/src/sql.ts";
import { createAnalyticsStore } from "../services/analytics/src/store.ts";
import { grpcFrame, pidOf, processCpu, rawGrpcClient, writeResults } from "./lib-load.js";

const clickhouseUrl = process.env.TEST_CLICKHOUSE_URL ?? "http://127.0.0.1:8123";
const batches = Number(process.env.BENCH_BATCHES ?? 300);
const batchSize = Number(process.env.BENCH_BATCH_SIZE ?? 1000);
const inFlight = Number(process.env.BENCH_IN_FLIGHT ?? 8);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const clientTime = process.env.BENCH_CLIENT_TIME !== "0";
const queryRuns = Number(process.env.BENCH_QUERY_RUNS ?? 21);
const queryWarmup = Number(process.env.BENCH_QUERY_WARMUP ?? 300);
const sizes = (process.env.BENCH_SIZES ?? "1000000,10000000")
  .split(",")
  .map(Number)
  .filter((n) => n > 0);
const round = (n: number, digits = 3) => Math.round(n * 10 ** digits) / 10 ** digits;
const load = () => loadavg().map((l) => round(l, 2));
const T0 = Date.UTC(2024, 0, 1);
const DAY = 86_400_000;

const database = uniqueName("analytics_bench");
const nats = await startNatsServer();
const issuer = await createTestIssuer();
const port = await freePort();
const ch = createServerClickHouse(clickhouseUrl);
const loadBefore = load();
let child: ChildProcess | undefined;

/** Runs jobs with `inFlight` at a time; answers the elapsed milliseconds. */
async function pool(count: number, job: (i: number) => Promise<void>): Promise<number> {
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < count) await job(next++);
    }),
  );
  return performance.now() - start;
}

// The bare client of both baselines: node:http over keep-alive sockets, one write per request.
const agent = new Agent({ keepAlive: true });
function postToClickHouse(query: string | undefined, body: Buffer | string): Promise<string> {
  const url = new URL(clickhouseUrl);
  if (query) url.searchParams.set("query", query);
  url.searchParams.set("max_query_size", String(16 * 1024 * 1024));
  const data = typeof body === "string" ? Buffer.from(body) : body;
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      { method: "POST", agent, headers: { "content-length": String(data.length) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          if (res.statusCode === 200) resolve(text);
          else reject(new Error(`ClickHouse ${res.statusCode}: ${text.slice(0, 200)}`));
        });
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
};

// The events of one batch: the same for both sides, only the tenant differs.
function batchEvents(b: number) {
  return Array.from({ length: batchSize }, (_, i) => {
    const n = b * batchSize + i;
    return {
      id: randomUUID(),
      name: ["page.view", "signup", "checkout:start", "purchase"][n % 4] as string,
      user: `user-${(n * 7919) % 5000}`,
      timeMs: T0 + n * 1000,
      props: {
        plan: ["free", "pro", "enterprise"][n % 3] as string,
        country: ["FR", "DE", "US"][n % 3] as string,
      },
      nums: { amount: (n % 1000) / 10 },
    };
  });
}

try {
  const jwksUrl = await issuer.serve();
  // BENCH_PROFILE_DIR=<dir> writes a CPU profile of the service there.
  const profile = process.env.BENCH_PROFILE_DIR
    ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`]
    : [];
  child = spawn(process.execPath, [...profile, "--import", "tsx", "services/analytics/src/main.ts"], {
    cwd: new URL("..", import.meta.url).pathname,
    env: {
      ...process.env,
      CLICKHOUSE_URL: clickhouseUrl,
      CLICKHOUSE_DATABASE: database,
      NATS_URL: nats.url,
      HOST: "127.0.0.1",
      PORT: String(port),
      ADMIN_PORT: "0",
      LOG_LEVEL: "warn",
      JWKS_URL: jwksUrl,
      JWT_ISSUER: issuer.issuer,
      JWT_AUDIENCE: issuer.audience,
      ANALYTICS_DOMAIN_STREAMS: "none",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  const perms = ["analytics.events.write", "analytics.metrics.read"];
  const token = (tid: string) => issuer.sign({ tid, perms, expiresIn: 900 });
  const client = createClient(AnalyticsService, createGrpcTransport({ baseUrl }));
  const probeHeaders = { headers: { authorization: `Bearer ${await token("probe")}` } };
  await eventually(
    () =>
      client
        .queryMetrics(
          {
            target: { case: "eventName", value: "x" },
            startTime: timestampFromMs(T0),
            endTime: timestampFromMs(T0 + DAY),
            bucket: Bucket.DAY,
            aggregation: Aggregation.COUNT,
          },
          probeHeaders,
        )
        .then(() => true),
    { timeoutMs: 120_000, what: "analytics to start" },
  );
  const events = tablesOf(database).events;
  const count = async (tenant: string) => {
    const rows = await ch.query<{ c: string }>(
      sql`SELECT count() AS c FROM ${events} WHERE tenant_id = ${tenant}`,
    );
    return Number(rows[0]?.c ?? 0);
  };

  // Waits until ClickHouse is not merging this database's parts and their number has stopped
  // changing (merges are picked a moment after an insert): each measured phase then starts on a
  // quiet server and pays for its own parts' merges, not for the other side's.
  let lastParts = -1;
  const settled = () =>
    eventually(
      async () => {
        const [row] = await ch.query<{ merging: string; parts: string }>(
          sql`SELECT (SELECT count() FROM system.merges WHERE database = ${database}) AS merging,
            (SELECT count() FROM system.parts WHERE database = ${database} AND active) AS parts`,
        );
        const parts = Number(row?.parts ?? 0);
        const quiet = Number(row?.merging ?? 0) === 0 && parts === lastParts;
        lastParts = parts;
        return quiet;
      },
      { timeoutMs: 120_000, intervalMs: 250, what: "ClickHouse merges to finish" },
    );

  // ---- 1. Ingest ----
  const all = Array.from({ length: batches + 10 }, (_, b) => batchEvents(b));
  const svcTenant = "ingest-svc";
  const directTenant = "ingest-direct";
  const frames = all.map((batch) =>
    grpcFrame(
      toBinary(
        TrackBatchRequestSchema,
        create(TrackBatchRequestSchema, {
          events: batch.map((e) => ({
            eventId: e.id,
            name: e.name,
            actor: { case: "userId" as const, value: e.user },
            // BENCH_CLIENT_TIME=0 leaves time unset (server time): no CEL time rule to evaluate.
            time: clientTime ? timestampFromMs(e.timeMs) : undefined,
            properties: e.props,
            numericProperties: e.nums,
          })),
        }),
      ),
    ),
  );
  // Rows exactly as the store writes them (see toRow in services/analytics/src/store.ts).
  const bodies = all.map((batch) =>
    Buffer.from(
      `${batch
        .map((e) =>
          JSON.stringify({
            tenant_id: directTenant,
            event_id: e.id,
            name: e.name,
            source: "client",
            user_id: e.user,
            anonymous_id: "",
            actor: `u:${e.user}`,
            time: Math.floor(e.timeMs / 1000),
            time_ms: e.timeMs,
            str_keys: Object.keys(e.props),
            str_values: Object.values(e.props),
            num_keys: Object.keys(e.nums),
            num_values: Object.values(e.nums),
            payload: "",
            received_at: Math.floor(Date.now() / 1000),
          }),
        )
        .join("\n")}\n`,
    ),
  );
  const session = h2connect(baseUrl);
  const svcToken = await token(svcTenant);
  const trackBatch = (frame: Uint8Array) =>
    new Promise<void>((resolve, reject) => {
      const req = session.request({
        ":method": "POST",
        ":path": "/trellis.analytics.v1.AnalyticsService/TrackBatch",
        "content-type": "application/grpc",
        te: "trailers",
        authorization: `Bearer ${svcToken}`,
      });
      let status: unknown;
      req.on("response", (h) => {
        status = h["grpc-status"] ?? status;
      });
      req.on("trailers", (h) => {
        status = h["grpc-status"];
      });
      req.on("data", () => {});
      req.on("end", () => (status === "0" ? resolve() : reject(new Error(`grpc-status ${String(status)}`))));
      req.on("error", reject);
      req.end(frame);
    });
  const insertQuery = `INSERT INTO ${events.text} FORMAT JSONEachRow`;
  const post = async (body: Buffer) => {
    await postToClickHouse(insertQuery, body);
  };

  // Warm-up: 10 batches each way (JIT, connections), then the measured runs.
  await pool(10, (i) => trackBatch(frames[batches + i] as Uint8Array));
  await pool(10, (i) => post(bodies[batches + i] as Buffer));
  await eventually(async () => (await count(svcTenant)) === 10 * batchSize, { timeoutMs: 60_000 });
  const rows = batches * batchSize;

  // CPU per process for each side: where a row's cost goes (the service, NATS, ClickHouse, this client).
  const clickhousePid = await pidOf("clickhouse-server");
  const pids = () => ({
    service: child?.pid,
    nats: nats.pid,
    clickhouse: clickhousePid,
    client: process.pid,
  });
  const cpuSpent = { service: {} as Record<string, number>, direct: {} as Record<string, number> };
  const measureCpu = async <T>(side: keyof typeof cpuSpent, work: () => Promise<T>): Promise<T> => {
    const before = processCpu(pids());
    const result = await work();
    const after = processCpu(pids());
    for (const [name, seconds] of Object.entries(after)) {
      cpuSpent[side][name] = (cpuSpent[side][name] ?? 0) + seconds - (before[name] ?? Number.NaN);
    }
    return result;
  };

  // Interleaved rounds, so both sides see the same (shared, noisy) machine.
  let svcMs = 0;
  let acceptMs = 0;
  let directMs = 0;
  const perRound = Math.ceil(batches / rounds);
  for (let r = 0, landed = 10 * batchSize; r * perRound < batches; r++) {
    const from = r * perRound;
    const n = Math.min(perRound, batches - from);
    await settled();
    const svcStart = performance.now();
    landed += n * batchSize;
    const target = landed;
    await measureCpu("service", async () => {
      acceptMs += await pool(n, (i) => trackBatch(frames[from + i] as Uint8Array));
      await eventually(async () => (await count(svcTenant)) === target, {
        timeoutMs: 600_000,
        intervalMs: 20,
        what: "every tracked row in ClickHouse",
      });
    });
    svcMs += performance.now() - svcStart;
    await settled();
    directMs += await measureCpu("direct", () => pool(n, (i) => post(bodies[from + i] as Buffer)));
  }
  session.close();
  // The floor: what decoding and checking the same batches costs this process alone (protobuf-es
  // decode, then protovalidate as the kit's validation interceptor runs it), no HTTP/2, no NATS,
  // no ClickHouse. The service does this for every accepted batch, on one thread.
  const validator = createKitValidator();
  const floorStart = performance.now();
  for (const frame of frames.slice(0, batches)) {
    const request = fromBinary(TrackBatchRequestSchema, frame.subarray(5));
    if (validator.validate(TrackBatchRequestSchema, request).kind !== "valid") {
      throw new Error("a bench batch does not pass its own contract's rules");
    }
  }
  const floorMs = performance.now() - floorStart;
  const ingest = {
    rows,
    batchSize,
    inFlight,
    rounds,
    clientTime,
    flushIntervalMs: 500,
    serviceRowsPerSec: Math.round(rows / (svcMs / 1000)),
    serviceAcceptedRowsPerSec: Math.round(rows / (acceptMs / 1000)),
    directRowsPerSec: Math.round(rows / (directMs / 1000)),
    ratio: round(directMs / svcMs),
    target: ">= 0.7",
    decodeAndValidateRowsPerSec: Math.round(rows / (floorMs / 1000)),
    decodeAndValidateRatio: round(directMs / floorMs),
    // CPU microseconds per row, per process, for each side (NaN: not readable, e.g. a remote ClickHouse).
    cpuMicrosPerRow: Object.fromEntries(
      Object.entries(cpuSpent).map(([side, spent]) => [
        side,
        Object.fromEntries(Object.entries(spent).map(([name, s]) => [name, round((s * 1e6) / rows, 1)])),
      ]),
    ),
  };
  console.log(
    `ingest: TrackBatch ${ingest.serviceRowsPerSec} rows/s into ClickHouse (accepted at ${ingest.serviceAcceptedRowsPerSec} rows/s) vs direct JSONEachRow ${ingest.directRowsPerSec} rows/s → ${ingest.ratio}x`,
  );
  for (const [side, spent] of Object.entries(ingest.cpuMicrosPerRow)) {
    const parts = Object.entries(spent).map(([name, us]) => `${name} ${us}`);
    console.log(`ingest CPU µs per row, ${side}: ${parts.join(", ")}`);
  }
  console.log(
    `ingest floor: protobuf decode + protovalidate alone, in one thread: ${ingest.decodeAndValidateRowsPerSec} rows/s → ${ingest.decodeAndValidateRatio}x of direct`,
  );

  // ---- 2. QueryMetrics over generated events ----
  const queryTenant = "bench";
  const spanMs = 30 * DAY;
  const base = { startTime: timestampFromMs(T0), endTime: timestampFromMs(T0 + spanMs) };
  const queries: Record<string, Omit<QueryMetricsRequest, "$typeName">> = {
    "count/hour, 7 days (rollup)": {
      ...create(QueryMetricsRequestSchema),
      target: { case: "eventName", value: "page.view" },
      startTime: timestampFromMs(T0),
      endTime: timestampFromMs(T0 + 7 * DAY),
      bucket: Bucket.HOUR,
      aggregation: Aggregation.COUNT,
    },
    "unique users/day, filtered, 30 days (raw)": {
      ...create(QueryMetricsRequestSchema),
      target: { case: "eventName", value: "page.view" },
      ...base,
      bucket: Bucket.DAY,
      aggregation: Aggregation.UNIQUE_USERS,
      filters: [create(FilterSchema, { property: "plan", op: FilterOp.IN, values: ["pro", "enterprise"] })],
    },
    "sum/day by country, 30 days (raw)": {
      ...create(QueryMetricsRequestSchema),
      target: { case: "eventName", value: "purchase" },
      ...base,
      bucket: Bucket.DAY,
      aggregation: Aggregation.SUM,
      sumProperty: "amount",
      groupBy: "country",
    },
  };
  // The SQL each query runs, captured from the store itself.
  let captured = "";
  const recorder: ClickHouse = {
    ...ch,
    query: (statement) => {
      captured = statement.text;
      return ch.query(statement);
    },
  };
  const store = createAnalyticsStore({ clickhouse: recorder, database });
  const statements: Record<string, string> = {};
  for (const [name, q] of Object.entries(queries)) {
    await store.queryMetrics(queryTenant, metricsQuery(create(QueryMetricsRequestSchema, q)));
    statements[name] = captured;
  }
  const direct = async (text: string) =>
    (await postToClickHouse(undefined, `${text}\nFORMAT JSONEachRow`))
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => JSON.parse(l));

  let generated = 0;
  const total = Math.max(0, ...sizes);
  const querying: Record<string, unknown>[] = [];
  for (const size of sizes) {
    const genStart = performance.now();
    for (let offset = generated; offset < size; offset += 1_000_000) {
      const n = Math.min(1_000_000, size - offset);
      // ~90 % for the queried tenant, the rest for another; times spread evenly over 30 days.
      const other = "bench-other";
      // INSERT … SELECT matches columns by position: the list names them in the SELECT's order.
      await ch.exec(sql`INSERT INTO ${events} (tenant_id, event_id, name, source, user_id, anonymous_id,
          actor, time_ms, time, str_keys, str_values, num_keys, num_values, payload, received_at)
        SELECT if(number % 10 = 9, ${other}, ${queryTenant}) AS tenant_id,
          concat('gen-', toString(number)) AS event_id,
          arrayElement(['page.view', 'signup', 'purchase', 'search', 'click'], intHash32(number) % 5 + 1) AS name,
          'client' AS source,
          concat('user-', toString(intHash32(number * 7) % 50000)) AS user_id, '' AS anonymous_id,
          concat('u:', user_id) AS actor,
          toInt64(${T0}) + toInt64(intDiv(number * ${spanMs}, ${total})) + toInt64(intHash32(number) % 1000) AS time_ms,
          toDateTime(intDiv(time_ms, 1000), 'UTC') AS time,
          ['plan', 'country'] AS str_keys,
          [arrayElement(['free', 'pro', 'enterprise'], intHash32(number * 3) % 3 + 1),
           arrayElement(['FR', 'DE', 'US', 'JP'], intHash32(number * 5) % 4 + 1)] AS str_values,
          ['amount'] AS num_keys, [toFloat64(intHash32(number * 11) % 10000) / 100] AS num_values,
          '' AS payload, time AS received_at
        FROM numbers(${offset}, ${n})`);
    }
    const genSeconds = round((performance.now() - genStart) / 1000, 1);
    // Tokens live at most 15 minutes: a fresh one per size.
    const qHeaders = { headers: { authorization: `Bearer ${await token(queryTenant)}` } };
    const lean = rawGrpcClient(baseUrl);
    generated = size;
    // Both sides are measured on a settled server: the parts just generated are merged first.
    await settled();
    {
      const [name, q] = Object.entries(queries)[0] as [string, (typeof queries)[string]];
      const warm = {
        path: "/trellis.analytics.v1.AnalyticsService/QueryMetrics",
        headers: { authorization: qHeaders.headers.authorization },
        body: toBinary(QueryMetricsRequestSchema, create(QueryMetricsRequestSchema, q)),
      };
      for (let i = 0; i < queryWarmup; i++) {
        fromBinary(QueryMetricsResponseSchema, await lean.call(warm));
        await direct(statements[name] as string);
      }
    }
    for (const [name, q] of Object.entries(queries)) {
      const text = statements[name] as string;
      const rpcMs: number[] = [];
      const directMs: number[] = [];
      // Warm-up, and a check that both sides answer the same non-empty result.
      const viaRpc = await client.queryMetrics(q, qHeaders);
      const viaDirect = (await direct(text)) as { vs: number[] }[];
      const rpcTotal = viaRpc.series.flatMap((x) => x.points).reduce((a, p) => a + p.value, 0);
      const directTotal = viaDirect.flatMap((r) => r.vs).reduce((a, v) => a + Number(v), 0);
      if (!(rpcTotal > 0) || Math.abs(rpcTotal - directTotal) > 1e-6 * directTotal) {
        throw new Error(`${name}: the RPC answered ${rpcTotal}, the SQL ${directTotal}`);
      }
      // Timed calls go through the lean gRPC client and are decoded, as the direct side is an
      // HTTP POST whose rows are parsed: connect-node's client alone cost ~1 ms a call here.
      const call = {
        path: "/trellis.analytics.v1.AnalyticsService/QueryMetrics",
        headers: { authorization: qHeaders.headers.authorization },
        body: toBinary(QueryMetricsRequestSchema, create(QueryMetricsRequestSchema, q)),
      };
      const leanTotal = fromBinary(QueryMetricsResponseSchema, await lean.call(call))
        .series.flatMap((x) => x.points)
        .reduce((a, p) => a + p.value, 0);
      if (leanTotal !== rpcTotal)
        throw new Error(`${name}: the lean call answered ${leanTotal}, not ${rpcTotal}`);
      for (let i = 0; i < queryRuns; i++) {
        let t = performance.now();
        fromBinary(QueryMetricsResponseSchema, await lean.call(call));
        rpcMs.push(performance.now() - t);
        t = performance.now();
        await direct(text);
        directMs.push(performance.now() - t);
      }
      const rpc = median(rpcMs);
      const bare = median(directMs);
      const result = {
        events: size,
        query: name,
        runs: queryRuns,
        warmupCalls: queryWarmup,
        rpcP50Ms: round(rpc, 1),
        directP50Ms: round(bare, 1),
        rpcMinMs: round(Math.min(...rpcMs), 1),
        directMinMs: round(Math.min(...directMs), 1),
        ratio: round(rpc / bare),
        extraMs: round(rpc - bare, 1),
        answerTotal: round(rpcTotal, 2),
        target: "<= 1.2x or <= +5 ms",
        met: rpc / bare <= 1.2 || rpc - bare <= 5,
        generateSeconds: genSeconds,
      };
      querying.push(result);
      console.log(
        `QueryMetrics ${size.toLocaleString("en")} events, ${name}: p50 ${result.rpcP50Ms} ms vs direct ${result.directP50Ms} ms → ${result.ratio}x (+${result.extraMs} ms); min ${result.rpcMinMs} vs ${result.directMinMs} ms`,
      );
    }
    lean.close();
  }
  const loadAfter = load();
  console.log(
    `load average before ${loadBefore.join(" ")}, after ${loadAfter.join(" ")} on ${cpus().length} CPUs`,
  );
  const file = await writeResults("analytics", {
    date: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model,
      node: process.version,
      loadavgBefore: loadBefore,
      loadavgAfter: loadAfter,
    },
    clickhouse: (await ch.query<{ v: string }>(sql`SELECT version() AS v`))[0]?.v,
    ingest,
    queryMetrics: querying,
    statements,
  });
  console.log(`results written to ${file}`);
} finally {
  if (child && child.exitCode === null) {
    child.kill("SIGTERM");
    await new Promise((r) => child?.once("exit", r));
  }
  if (!process.env.BENCH_KEEP)
    await ch.exec(sql`DROP DATABASE IF EXISTS ${tablesOf(database).database}`).catch(() => {});
  await ch.close();
  agent.destroy();
  await nats.dispose();
  await issuer.close();
}
