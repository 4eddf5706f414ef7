// Billing benchmark (issue 4): Charge and RecordUsage RPC throughput against pgbench running the same
// SQL transaction (the same statements, in the same order, prepared) on the same database, with the
// same number of database connections. The service runs as a child process
// (node --import tsx services/billing/src/main.ts) with its outbox relay publishing to a private
// nats-server; the relay keeps running during the pgbench runs too, so both sides pay for it.
// Ratio = RPCs per second / pgbench transactions per second; the target is >= 0.7.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  BillingService,
  ChargeRequestSchema,
  MeteredComponentSchema,
  PlanInterval,
  PriceSchema,
  RecordUsageRequestSchema,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { PaymentSucceededSchema } from "@trellis/gen/trellis/billing/v1/events_pb.js";
import { createDb } from "@trellis/kit/db.js";
import { createTestIssuer } from "@trellis/kit/test-tokens.js";
import { createTestDatabase, eventually, freePort, startNatsServer } from "@trellis/kit/testing.js";
import { emit } from "../services/billing/src/events.ts";
import { createStore } from "../services/billing/src/store.ts";
import { machineCpu, processCpu, rawGrpcClient, writeResults } from "./lib-load.js";

const run = promisify(execFile);
const seconds = Number(process.env.BENCH_SECONDS ?? 8);
const dbConnections = Number(process.env.BENCH_DB_CONNECTIONS ?? 10);
const inFlight = Number(process.env.BENCH_IN_FLIGHT ?? 32);
const tenants = Number(process.env.BENCH_TENANTS ?? 50);
const adminUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const round = (n: number, digits = 3) => Math.round(n * 10 ** digits) / 10 ** digits;
const hex = (bytes: number) => randomBytes(bytes).toString("hex");

const db = await createTestDatabase("billing_bench", adminUrl);
const nats = await startNatsServer();
const issuer = await createTestIssuer();
const port = await freePort();
let child: ChildProcess | undefined;

// The statements billing's Charge and RecordUsage run (store-catalog claimKey, store-payments
// insertCharge / store-billing usageContext and insertUsage, the kit's enqueue, completeKey), in
// the same order, with pgbench variables for the per-call values. The service issues its last three
// writes and the NOTIFY together (postgres.js pipelines them): pgbench pipelines the same four.
const tenantExpr = "('bench-' || (:t)::text)";
const keyExpr = "('pg-' || (:client_id)::text || '-' || (:r)::text)";
const claim = (method: string) => `with claimed as (
    insert into idempotency_keys (tenant_id, key, method, request_hash, expires_at)
    values (${tenantExpr}, ${keyExpr}, '${method}', '\\x${hex(32)}'::bytea, now() + interval '1 day')
    on conflict (tenant_id, key) do update
      set method = excluded.method, request_hash = excluded.request_hash, response = null,
          created_at = now(), expires_at = excluded.expires_at
      where idempotency_keys.expires_at <= now()
    returning 1)
  select exists (select 1 from claimed) as claimed,
    (select now_at from billing_clocks where tenant_id = ${tenantExpr}) as clock_at;`;
const tail = (insert: string, subject: string, type: string, payloadBytes: number, responseBytes: number) => [
  "\\startpipeline",
  insert,
  `insert into outbox (id, subject, type, payload, headers)
   values (${keyExpr}, '${subject}', '${type}', '\\x${hex(payloadBytes)}'::bytea,
     '{"traceparent":"00-${hex(16)}-${hex(8)}-01"}'::jsonb);`,
  "select pg_notify('trellis_outbox', '');",
  `update idempotency_keys set response = '\\x${hex(responseBytes)}'::bytea
   where tenant_id = ${tenantExpr} and key = ${keyExpr};`,
  "\\endpipeline",
];
const oneLine = (sql: string) => sql.replace(/\s*\n\s*/g, " ");
const script = (lines: string[]) =>
  `\\set r random(1, 9000000000000000000)\n\\set t random(1, ${tenants})\n${lines.map(oneLine).join("\n")}\n`;

const chargeScript = script([
  "BEGIN;",
  claim("Charge"),
  ...tail(
    `insert into charges (id, tenant_id, amount_minor, currency, amount_refunded, status, failure_code,
       failure_message, payment_method, description, metadata, invoice_id, provider_charge_id, created_at)
     values ('ch_' || ${keyExpr}, ${tenantExpr}, 4599, 'USD', 0, 'succeeded', null, '', 'pm_card_visa',
       'bench order', '{"order_id":"ord_1"}'::jsonb, null, 'ch_sandbox_${hex(10)}', now());`,
    "trellis.billing.payment.succeeded",
    "trellis.billing.v1.PaymentSucceeded",
    160,
    190,
  ),
  "COMMIT;",
]);

const usageScript = script([
  "BEGIN;",
  claim("RecordUsage"),
  `select s.id as sub_id, s.plan_id as sub_plan, s.current_period_start, (m.metric is not null) as metered
   from subscriptions s
   left join plan_metered_components m on m.plan_id = s.plan_id and m.metric = 'api.calls'
   where s.tenant_id = ${tenantExpr} and s.status <> 'canceled' \\gset`,
  ...tail(
    `insert into usage_records (id, tenant_id, subscription_id, plan_id, metric, quantity, usage_at, created_at)
     values ('ur_' || ${keyExpr}, ${tenantExpr}, :sub_id, :sub_plan, 'api.calls', 7, now(), now());`,
    "trellis.billing.usage.recorded",
    "trellis.billing.v1.UsageRecorded",
    150,
    120,
  ),
  "COMMIT;",
]);

async function pgbench(name: string, body: string): Promise<{ tps: number; failed: number }> {
  const file = join(tmpdir(), `trellis-bench-${name}-${process.pid}.sql`);
  await writeFile(file, body);
  const url = new URL(db.url);
  const { stdout } = await run(
    "pgbench",
    [
      "-n",
      "-M",
      "prepared",
      "-c",
      String(dbConnections),
      "-j",
      "2",
      "-T",
      String(seconds),
      "-f",
      file,
      "-h",
      url.hostname,
      "-p",
      url.port || "5432",
      "-U",
      url.username || "postgres",
      db.name,
    ],
    { maxBuffer: 1 << 24 },
  );
  const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(stdout)?.[1]);
  const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1] ?? 0);
  if (Number.isNaN(tps)) throw new Error(`cannot parse pgbench output:\n${stdout}`);
  return { tps, failed };
}

async function flood(
  call: (i: number) => Promise<unknown>,
  ms: number,
): Promise<{ perSec: number; failed: number }> {
  let done = 0;
  let failed = 0;
  let next = 0;
  const start = performance.now();
  const end = start + ms;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() < end) {
        try {
          await call(next++);
          done++;
        } catch (error) {
          if (failed++ === 0) console.error("first failure:", error);
        }
      }
    }),
  );
  return { perSec: done / ((performance.now() - start) / 1000), failed };
}

try {
  const jwksUrl = await issuer.serve();
  // BENCH_PROFILE_DIR=<dir> writes a CPU profile of the service there.
  const profile = process.env.BENCH_PROFILE_DIR
    ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`]
    : [];
  child = spawn(process.execPath, [...profile, "--import", "tsx", "services/billing/src/main.ts"], {
    cwd: new URL("..", import.meta.url).pathname,
    env: {
      ...process.env,
      DATABASE_URL: db.url,
      NATS_URL: nats.url,
      HOST: "127.0.0.1",
      PORT: String(port),
      ADMIN_PORT: "0",
      LOG_LEVEL: "warn",
      JWKS_URL: jwksUrl,
      JWT_ISSUER: issuer.issuer,
      JWT_AUDIENCE: issuer.audience,
      TRUST_FORWARDED_IDENTITY: "true",
      BILLING_SCHEDULER_INTERVAL_MS: "0",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  const xfcc =
    "By=spiffe://trellis.local/ns/trellis/sa/billing;URI=spiffe://trellis.local/ns/trellis/sa/core";
  const core = createClient(BillingService, createGrpcTransport({ baseUrl }));
  const coreHeaders = { headers: { "x-forwarded-client-cert": xfcc } };
  await eventually(() => core.getTenantBillingStatus({ tenantId: "bench-1" }, coreHeaders).then(() => true), {
    timeoutMs: 60_000,
    what: "billing to start",
  });

  // Setup: a metered free plan and one live subscription per bench tenant.
  const perms = ["billing.plans.manage", "billing.subscriptions.manage", "billing.usage.write"];
  const tokens = await Promise.all(
    Array.from({ length: tenants }, (_, i) => issuer.sign({ tid: `bench-${i + 1}`, perms, expiresIn: 900 })),
  );
  const user = createClient(BillingService, createGrpcTransport({ baseUrl }));
  const auth = (i: number) => ({ headers: { authorization: `Bearer ${tokens[i % tenants]}` } });
  const plan = await user.createPlan(
    {
      name: "Bench",
      currency: "USD",
      prices: [
        create(PriceSchema, { interval: PlanInterval.MONTH, amount: { amountMinor: 0n, currency: "USD" } }),
      ],
      meteredComponents: [
        create(MeteredComponentSchema, {
          metric: "api.calls",
          unitPrice: { amountMinor: 1n, currency: "USD" },
          includedQuantity: 0n,
        }),
      ],
      idempotencyKey: "bench-plan",
    },
    auth(0),
  );
  for (let i = 0; i < tenants; i++) {
    await user.createSubscription(
      { planId: plan.plan?.planId ?? "", interval: PlanInterval.MONTH, idempotencyKey: `bench-sub-${i}` },
      auth(i),
    );
  }

  // The measured calls go through a lean client (prebuilt gRPC frames over one HTTP/2
  // connection): connect-node's client took about 0.65 ms of CPU a call, a third of a core at
  // these rates, on the same two cores as the service and PostgreSQL. The answers are checked.
  const runId = hex(4);
  const raw = rawGrpcClient(baseUrl);
  const charge = (i: number) =>
    raw.call({
      path: "/trellis.billing.v1.BillingService/Charge",
      headers: { "x-forwarded-client-cert": xfcc },
      body: toBinary(
        ChargeRequestSchema,
        create(ChargeRequestSchema, {
          tenantId: `bench-${(i % tenants) + 1}`,
          amount: { amountMinor: 4599n, currency: "USD" },
          idempotencyKey: `rpc-${runId}-${i}`,
          paymentMethod: "pm_card_visa",
          description: "bench order",
          metadata: { order_id: "ord_1" },
        }),
      ),
    });
  const bearer = tokens.map((t) => ({ authorization: `Bearer ${t}` }));
  const usage = (i: number) =>
    raw.call({
      path: "/trellis.billing.v1.BillingService/RecordUsage",
      headers: bearer[i % tenants] as Record<string, string>,
      body: toBinary(
        RecordUsageRequestSchema,
        create(RecordUsageRequestSchema, {
          metric: "api.calls",
          quantity: 7n,
          idempotencyKey: `rpc-${runId}-u${i}`,
        }),
      ),
    });

  // Warm up both sides (JIT, prepared statements, caches).
  const warm = Math.max(2000, seconds * 250);
  await flood((i) => charge(i + 10_000_000), warm);
  await flood((i) => usage(i + 10_000_000), warm);
  await pgbench("charge-warm", chargeScript);

  // The floor of any Node.js service here: the Charge transaction through billing's own store and
  // outbox over postgres.js (the same statements, pipelined the same way, same pool size and
  // in-flight count), without HTTP/2, the kit's interceptors or the handler, in this process.
  const driver = createDb(db.url, { service: "bench", max: dbConnections });
  const store = createStore(driver);
  const requestHash = Buffer.from(hex(32), "hex");
  const response = Buffer.from(hex(190), "hex");
  const driverCharge = (i: number) => {
    const tenant = `bench-${(i % tenants) + 1}`;
    const key = `drv-${runId}-${i}`;
    return store.transaction(async (s, tx) => {
      const { claim, clockAt } = await s.claimKey(tenant, key, "Charge", requestHash, 86_400_000);
      if (claim.kind !== "claimed") throw new Error(`key not claimed: ${claim.kind}`);
      const now = clockAt ?? new Date();
      const amountMinor = 4599n;
      await Promise.all([
        s.insertCharge({
          id: `ch_${key}`,
          tenant_id: tenant,
          amount_minor: amountMinor,
          currency: "USD",
          amount_refunded: 0n,
          status: "succeeded",
          failure_code: null,
          failure_message: "",
          payment_method: "pm_card_visa",
          description: "bench order",
          metadata: { order_id: "ord_1" },
          invoice_id: null,
          provider_charge_id: `ch_sandbox_${key}`,
          created_at: now,
        }),
        emit(tx, PaymentSucceededSchema, {
          tenantId: tenant,
          chargeId: `ch_${key}`,
          amount: { amountMinor, currency: "USD" },
          paymentMethod: "pm_card_visa",
          invoiceId: "",
          metadata: { order_id: "ord_1" },
          occurredAt: timestampFromDate(now),
        }),
        s.completeKey(tenant, key, response),
      ]);
    });
  };
  await flood((i) => driverCharge(i + 10_000_000), warm);

  // Where each phase's CPU goes: the machine's busy share, and the service's CPU per transaction.
  const cpu: Record<
    string,
    { machineBusy: number; machineMsPerTx: number; serviceMsPerTx: number; clientMsPerTx: number }
  > = {};
  const measured = async <T extends { perSec?: number; tps?: number }>(
    name: string,
    work: () => Promise<T>,
  ) => {
    const pids = { service: child?.pid, client: process.pid };
    const [m0, p0] = [machineCpu(), processCpu(pids)];
    const start = performance.now();
    const result = await work();
    const [m1, p1] = [machineCpu(), processCpu(pids)];
    const tx = (result.perSec ?? result.tps ?? 0) * ((performance.now() - start) / 1000);
    const msPerTx = (seconds: number) => round((seconds * 1000) / tx, 3);
    cpu[name] = {
      machineBusy: round((m1.busy - m0.busy) / (m1.total - m0.total), 2),
      machineMsPerTx: msPerTx(m1.busy - m0.busy),
      serviceMsPerTx: msPerTx((p1.service ?? Number.NaN) - (p0.service ?? Number.NaN)),
      clientMsPerTx: msPerTx((p1.client ?? Number.NaN) - (p0.client ?? Number.NaN)),
    };
    return result;
  };
  const chargeRpc = await measured("chargeRpc", () => flood(charge, seconds * 1000));
  const chargeDriver = await measured("chargeStoreAlone", () => flood(driverCharge, seconds * 1000));
  await driver.end();
  const chargePg = await measured("chargePgbench", () => pgbench("charge", chargeScript));
  const usageRpc = await measured("usageRpc", () => flood(usage, seconds * 1000));
  const usagePg = await measured("usagePgbench", () => pgbench("usage", usageScript));
  raw.close();

  const result = (rpc: typeof chargeRpc, pg: Awaited<ReturnType<typeof pgbench>>) => ({
    rpcPerSec: round(rpc.perSec, 1),
    rpcFailed: rpc.failed,
    pgbenchTps: round(pg.tps, 1),
    pgbenchFailed: pg.failed,
    ratio: round(rpc.perSec / pg.tps),
    target: ">= 0.7",
  });
  const chargeResult = {
    ...result(chargeRpc, chargePg),
    driverFloorPerSec: round(chargeDriver.perSec, 1),
    driverFloorRatio: round(chargeDriver.perSec / chargePg.tps),
  };
  const usageResult = result(usageRpc, usagePg);
  console.log(
    `Charge: ${chargeResult.rpcPerSec} RPC/s vs pgbench ${chargeResult.pgbenchTps} tps → ${chargeResult.ratio}x`,
  );
  console.log(
    `Charge through billing's store and outbox alone (no HTTP/2, no kit): ${chargeResult.driverFloorPerSec} tx/s → ${chargeResult.driverFloorRatio}x of pgbench`,
  );
  console.log(
    `RecordUsage: ${usageResult.rpcPerSec} RPC/s vs pgbench ${usageResult.pgbenchTps} tps → ${usageResult.ratio}x`,
  );
  for (const [name, c] of Object.entries(cpu)) {
    console.log(
      `${name}: machine CPU ${Math.round(c.machineBusy * 100)}% busy; ms of CPU per transaction: all ${c.machineMsPerTx}, service ${c.serviceMsPerTx}, this client ${c.clientMsPerTx}`,
    );
  }
  console.log(
    `load average: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")} on ${cpus().length} CPUs`,
  );
  const file = await writeResults("billing", {
    date: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model,
      node: process.version,
      loadavg: loadavg().map((l) => round(l, 2)),
    },
    inputs: {
      seconds,
      dbConnections,
      rpcInFlight: inFlight,
      tenants,
      pgbench: `-M prepared -c ${dbConnections} -j 2`,
      protocol: "gRPC over h2c, one connection, prebuilt frames (lean client)",
    },
    charge: chargeResult,
    recordUsage: usageResult,
    cpu,
    scripts: { charge: chargeScript, recordUsage: usageScript },
  });
  console.log(`results written to ${file}`);
} finally {
  if (child && child.exitCode === null) {
    child.kill("SIGTERM");
    await new Promise((r) => child?.once("exit", r));
  }
  await nats.dispose();
  await issuer.close();
  await db.drop();
}
