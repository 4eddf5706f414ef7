// Core benchmark (issue 5): CreateOrder end to end — core and billing as their own processes
// (node --import tsx services/<svc>/src/main.ts), each with its PostgreSQL database and outbox
// relay on a private nats-server. CreateOrder answers once the saga is done (CORE_ORDER_WAIT), so
// one call is one whole order: reserve, Charge through billing, confirm.
// Against it, the sum of the bare costs of one order, measured in the same run at the same
// concurrency: the RPC floor (a trivial unary Echo through the kit, with the same token check, in
// its own process) twice — client → core and core → billing — plus the same SQL transactions run
// directly with postgres.js: core's own store functions in the order the saga runs them, and the
// statements of billing's Charge.
// Latency ratio = order p50 / (2 × Echo p50 + SQL p50); throughput ratio = orders/s against
// 1 / (2/Echo per s + 1/SQL orders per s).
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpus } from "node:os";
import { createInterface } from "node:readline";
import { create } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CoreService, OrderStatus } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { OrderConfirmedSchema } from "@trellis/gen/trellis/core/v1/events_pb.js";
import { file_trellis_testing_v1_testing, TestService } from "@trellis/gen/trellis/testing/v1/testing_pb.js";
import { createDb, type Db } from "@trellis/kit/db.js";
import { migrate } from "@trellis/kit/migrate.js";
import { connectNats } from "@trellis/kit/nats.js";
import { enqueue } from "@trellis/kit/outbox.js";
import { startRelay } from "@trellis/kit/relay.js";
import { type ServiceDefinition, startServiceInstance } from "@trellis/kit/service.js";
import { createTestIssuer } from "@trellis/kit/test-tokens.js";
import { createTestDatabase, eventually, freePort, startNatsServer } from "@trellis/kit/testing.js";
import { createCoreEvents } from "../services/core/src/events.js";
import * as store from "../services/core/src/store.js";
import { writeResults } from "./lib-load.js";

// The Echo server of the RPC floor: this file, run as a child process with CORE_BENCH_ROLE=echo.
if (process.env.CORE_BENCH_ROLE === "echo") {
  const echo: ServiceDefinition = {
    name: "echo",
    defaultPort: 0,
    files: [file_trellis_testing_v1_testing],
    create: async () => ({
      routes: (router) => router.service(TestService, { echo: (req) => ({ text: req.text }) }),
    }),
  };
  const instance = await startServiceInstance(echo, process.env);
  process.stdout.write(`port ${instance.port}\n`);
  process.on("SIGTERM", () => void instance.close().then(() => process.exit(0)));
} else {
  await bench();
}

async function bench() {
  const seconds = Number(process.env.BENCH_SECONDS ?? 8);
  const inFlight = Number(process.env.BENCH_IN_FLIGHT ?? 16);
  const tenants = Number(process.env.BENCH_TENANTS ?? 8);
  const productsPerTenant = Number(process.env.BENCH_PRODUCTS ?? 8);
  const adminUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
  const root = new URL("..", import.meta.url).pathname;
  const round = (n: number, digits = 3) => Math.round(n * 10 ** digits) / 10 ** digits;
  const runId = randomBytes(4).toString("hex");

  const coreDb = await createTestDatabase("core_bench", adminUrl);
  // The bare SQL runs on its own copy of core's schema, where no saga runner picks its rows up.
  const bareDb = await createTestDatabase("core_bench_bare", adminUrl);
  const billingDb = await createTestDatabase("billing_for_core_bench", adminUrl);
  const nats = await startNatsServer("/usr/sbin/nats-server");
  const issuer = await createTestIssuer();
  const children: ChildProcess[] = [];
  const pools: Db[] = [];
  const stops: Array<() => Promise<void>> = [];

  const start = async (args: string[], env: Record<string, string>, port?: number): Promise<number> => {
    const child = spawn(process.execPath, ["--import", "tsx", ...args], {
      cwd: root,
      env: {
        ...process.env,
        HOST: "127.0.0.1",
        PORT: String(port ?? 0),
        ADMIN_PORT: "0",
        LOG_LEVEL: "warn",
        ...env,
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    children.push(child);
    if (port !== undefined) {
      child.stdout?.resume();
      return port;
    }
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    for await (const line of lines) {
      const match = /^port (\d+)$/.exec(line);
      if (match) return Number(match[1]);
    }
    throw new Error(`${args.join(" ")} exited before listening`);
  };

  try {
    const jwksUrl = await issuer.serve();
    const auth = { JWKS_URL: jwksUrl, JWT_ISSUER: issuer.issuer, JWT_AUDIENCE: issuer.audience };
    const billingPort = await start(
      ["services/billing/src/main.ts"],
      {
        ...auth,
        DATABASE_URL: billingDb.url,
        NATS_URL: nats.url,
        TRUST_FORWARDED_IDENTITY: "true",
        BILLING_SCHEDULER_INTERVAL_MS: "0",
      },
      await freePort(),
    );
    const corePort = await start(
      ["services/core/src/main.ts"],
      {
        ...auth,
        DATABASE_URL: coreDb.url,
        NATS_URL: nats.url,
        BILLING_URL: `http://127.0.0.1:${billingPort}`,
        BILLING_FORWARDED_IDENTITY: "true",
        CORE_ORDER_WAIT: "30s",
      },
      await freePort(),
    );
    const echoPort = await start(["bench/core.ts"], { ...auth, CORE_BENCH_ROLE: "echo" });

    const tokens = await Promise.all(
      Array.from({ length: tenants }, (_, i) =>
        issuer.sign({
          tid: `bench-${runId}-${i}`,
          perms: ["core.products.write", "core.inventory.write", "core.orders.write", "core.orders.read"],
          expiresIn: 900,
        }),
      ),
    );
    const bearer =
      (i: number): Interceptor =>
      (next) =>
      (req) => {
        req.header.set("authorization", `Bearer ${tokens[i % tenants]}`);
        return next(req);
      };
    const coreClients: Client<typeof CoreService>[] = tokens.map((_, i) =>
      createClient(
        CoreService,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${corePort}`, interceptors: [bearer(i)] }),
      ),
    );
    const echo = createClient(
      TestService,
      createGrpcTransport({ baseUrl: `http://127.0.0.1:${echoPort}`, interceptors: [bearer(0)] }),
    );
    await eventually(() => coreClients[0]?.listOrders({}).then(() => true), {
      timeoutMs: 60_000,
      what: "core",
    });

    // Setup: products with plenty of stock for every tenant.
    const products: string[][] = [];
    for (const [t, client] of coreClients.entries()) {
      const ids: string[] = [];
      for (let p = 0; p < productsPerTenant; p++) {
        const { product } = await client.createProduct({
          sku: `B-${p}`,
          name: `Bench ${p}`,
          price: { amountMinor: 1299n, currency: "USD" },
          active: true,
        });
        const productId = product?.productId ?? "";
        await client.adjustStock({
          productId,
          delta: 1_000_000,
          reason: "bench",
          idempotencyKey: `stock-${p}`,
        });
        ids.push(productId);
      }
      products[t] = ids;
    }
    const pick = (i: number) => {
      const ids = products[i % tenants] ?? [];
      return ids[Math.floor(Math.random() * ids.length)] ?? "";
    };

    // Runs call with inFlight workers for ms; returns per-call latencies and the rate.
    const load = async (call: (i: number) => Promise<boolean>, ms: number) => {
      const latencies: number[] = [];
      let failed = 0;
      let next = 0;
      const begin = performance.now();
      const end = begin + ms;
      await Promise.all(
        Array.from({ length: inFlight }, async () => {
          while (performance.now() < end) {
            const t0 = performance.now();
            try {
              if (await call(next++)) latencies.push(performance.now() - t0);
              else failed++;
            } catch (error) {
              if (failed++ === 0) console.error("first failure:", error);
            }
          }
        }),
      );
      const elapsed = (performance.now() - begin) / 1000;
      latencies.sort((a, b) => a - b);
      const pct = (p: number) =>
        latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0;
      return {
        perSec: latencies.length / elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
        done: latencies.length,
        failed,
      };
    };

    const order = (i: number) =>
      coreClients[i % tenants]
        ?.createOrder({
          items: [{ productId: pick(i), quantity: 1 }],
          paymentMethod: "pm_card_visa",
          idempotencyKey: `o-${runId}-${i}-${Math.random()}`,
        })
        .then((res) => res.order?.status === OrderStatus.CONFIRMED) ?? Promise.resolve(false);
    const ping = () => echo.echo({ text: "hello trellis" }).then(() => true);

    // The bare SQL of one order: core's store functions in the saga's order, on a migrated copy of
    // core's schema holding the same products, and billing's Charge statements on billing's database.
    const coreSql = createDb(bareDb.url, { max: 10 });
    const billingSql = createDb(billingDb.url, { max: 10 });
    pools.push(coreSql, billingSql);
    const events = createCoreEvents();
    await migrate(coreSql, {
      dir: new URL("../services/core/migrations", import.meta.url).pathname,
      service: "core",
    });
    const source = createDb(coreDb.url, { max: 1 });
    pools.push(source);
    for (const table of ["products", "stock"] as const) {
      const rows = await source`select * from ${source(table)}`;
      await coreSql`insert into ${coreSql(table)} ${coreSql(rows as unknown as Record<string, unknown>[])}`;
    }
    // The bare side's outbox is relayed to NATS too, as core's is.
    const bareNats = await connectNats(nats.url, { name: "core-bare" });
    const bareRelay = await startRelay({ sql: coreSql, nats: bareNats, service: "core" });
    stops.push(async () => {
      await bareRelay.stop();
      await bareNats.close();
    });
    const sqlOrder = async (i: number) => {
      const tenantId = `bench-${runId}-${i % tenants}`;
      const productId = pick(i);
      const key = `sql-${runId}-${i}-${Math.random()}`;
      const orderId = `ord_sql_${runId}_${i}_${randomBytes(3).toString("hex")}`;
      const [, [product]] = await Promise.all([
        store.findOrderByKey(coreSql, tenantId, key),
        store.getProducts(coreSql, tenantId, [productId]),
      ]);
      if (!product) throw new Error("no product");
      await store.getTenantBilling(coreSql, tenantId);
      const items = [
        {
          product_id: productId,
          sku: product.sku,
          name: product.name,
          quantity: 1,
          unit_price_minor: product.price_minor,
          currency: "USD",
        },
      ];
      await coreSql.begin(async (tx) => {
        const row = await store.insertOrder(tx, {
          tenantId,
          orderId,
          userId: "bench",
          totalMinor: product.price_minor,
          currency: "USD",
          paymentMethod: "pm_card_visa",
          idempotencyKey: key,
          requestHash: key,
          items,
        });
        if (!row) throw new Error("not inserted");
        await Promise.all([
          store.insertSaga(tx, tenantId, orderId),
          events.orderCreated(
            tx,
            row,
            items.map((it) => ({ ...it, order_id: orderId, line: 1 })),
          ),
        ]);
      });
      // Each step as the saga runs it: read the saga, then one transaction that takes the step
      // deadline and locks the order and the saga row (pipelined), and writes the outcome.
      const step = async (fn: (tx: store.Tx, order: store.OrderRow) => Promise<void>) => {
        await store.loadSaga(coreSql, orderId);
        await coreSql.begin(async (tx) => {
          const [, o] = await Promise.all([
            tx`select set_config('statement_timeout', '5000', true)`.execute(),
            store.lockOrder(tx, tenantId, orderId),
            store.loadSaga(tx, orderId, true),
          ]);
          await fn(tx, o);
        });
      };
      await step(async (tx, o) => {
        const lines = await store.orderItems(tx, tenantId, orderId);
        const items = lines.map((l) => ({ productId: l.product_id, quantity: l.quantity }));
        await store.reserveItems(tx, events, tenantId, orderId, items, 900_000);
        await Promise.all([
          store.setOrderStatus(tx, o, "reserved"),
          store.recordStep(tx, orderId, { step: "charge" }, { step: "reserve", outcome: "reserved" }),
        ]);
      });
      await step(async (tx) => {
        await store.releasedReservations(tx, tenantId, orderId);
        const patch = { attempts: 1, charge_state: "pending" as const };
        await store.recordStep(tx, orderId, patch, { step: "charge", outcome: "attempt" });
      });
      await billingCharge(billingSql, tenantId, `order:${orderId}:charge`, product.price_minor);
      await step(async (tx, o) => {
        await store.releasedReservations(tx, tenantId, orderId);
        const patch = { step: "confirm" as const, charge_state: "succeeded" as const };
        await Promise.all([
          store.commitReservations(tx, tenantId, orderId),
          store.setOrderStatus(tx, o, "paid", { paymentId: "ch_x" }),
          store.recordStep(tx, orderId, patch, { step: "charge", outcome: "charged" }),
        ]);
      });
      await step(async (tx, o) => {
        const patch = { status: "completed" as const, step: "done" as const };
        const [confirmed] = await Promise.all([
          store.setOrderStatus(tx, o, "confirmed"),
          store.orderItems(tx, tenantId, orderId),
          store.recordStep(tx, orderId, patch, { step: "confirm", outcome: "confirmed" }),
        ]);
        await enqueue(
          tx,
          OrderConfirmedSchema,
          create(OrderConfirmedSchema, { orderId: confirmed.order_id }),
        );
      });
      await store.loadSaga(coreSql, orderId);
      await store.getOrder(coreSql, tenantId, orderId);
      return true;
    };

    // Warm up every path (JIT, connections, prepared statements, billing status caches).
    const warm = Math.max(1500, seconds * 200);
    await load(order, warm);
    await load(ping, warm);
    await load(sqlOrder, warm);

    const orders = await load(order, seconds * 1000);
    const rpc = await load(ping, seconds * 1000);
    const sql = await load(sqlOrder, seconds * 1000);

    const floorP50 = 2 * rpc.p50 + sql.p50;
    const floorP99 = 2 * rpc.p99 + sql.p99;
    const floorPerSec = 1 / (2 / rpc.perSec + 1 / sql.perSec);
    const ms = (n: number) => round(n, 2);
    const result = {
      orders: {
        perSec: round(orders.perSec, 1),
        p50Ms: ms(orders.p50),
        p99Ms: ms(orders.p99),
        done: orders.done,
        failed: orders.failed,
      },
      rpcFloor: { perSec: round(rpc.perSec, 1), p50Ms: ms(rpc.p50), p99Ms: ms(rpc.p99) },
      sqlFloor: { ordersPerSec: round(sql.perSec, 1), p50Ms: ms(sql.p50), p99Ms: ms(sql.p99) },
      bare: { p50Ms: ms(floorP50), p99Ms: ms(floorP99), ordersPerSec: round(floorPerSec, 1) },
      ratios: {
        p50: round(orders.p50 / floorP50, 2),
        p99: round(orders.p99 / floorP99, 2),
        throughput: round(orders.perSec / floorPerSec, 3),
      },
    };
    console.log(
      `CreateOrder end to end: ${result.orders.perSec} orders/s, p50 ${result.orders.p50Ms} ms, p99 ${result.orders.p99Ms} ms` +
        ` (${orders.failed} not confirmed)`,
    );
    console.log(
      `bare: 2 × Echo p50 ${result.rpcFloor.p50Ms} ms + SQL p50 ${result.sqlFloor.p50Ms} ms = ${result.bare.p50Ms} ms;` +
        ` ${result.bare.ordersPerSec} orders/s`,
    );
    console.log(
      `ratios: p50 ${result.ratios.p50}x, p99 ${result.ratios.p99}x, throughput ${result.ratios.throughput} of the bare sum`,
    );
    const file = await writeResults("core", {
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
      inputs: {
        seconds,
        inFlight,
        tenants,
        productsPerTenant,
        itemsPerOrder: 1,
        protocol: "gRPC over h2c, one connection per client",
        services: "core and billing as child processes, each with its own database; Echo in its own process",
      },
      ...result,
    });
    console.log(`results written to ${file}`);
  } finally {
    for (const child of children) {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await new Promise((r) => child.once("exit", r));
      }
    }
    for (const stop of stops) await stop();
    for (const pool of pools) await pool.end({ timeout: 1 });
    await nats.dispose();
    await issuer.close();
    await coreDb.drop();
    await bareDb.drop();
    await billingDb.drop();
  }
}

// The statements billing's Charge runs (idempotency claim, charge, outbox, stored response, notify).
async function billingCharge(sql: Db, tenantId: string, key: string, amountMinor: bigint): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`
      with claimed as (
        insert into idempotency_keys (tenant_id, key, method, request_hash, expires_at)
        values (${tenantId}, ${key}, 'Charge', ${randomBytes(32)}, now() + interval '1 day')
        on conflict (tenant_id, key) do update
          set method = excluded.method, request_hash = excluded.request_hash, response = null,
              created_at = now(), expires_at = excluded.expires_at
          where idempotency_keys.expires_at <= now()
        returning 1)
      select exists (select 1 from claimed) as claimed,
        (select now_at from billing_clocks where tenant_id = ${tenantId}) as clock_at`;
    const id = `ch_${randomBytes(10).toString("hex")}`;
    await Promise.all([
      tx`insert into charges (id, tenant_id, amount_minor, currency, amount_refunded, status, failure_code,
           failure_message, payment_method, description, metadata, invoice_id, provider_charge_id, created_at)
         values (${id}, ${tenantId}, ${amountMinor.toString()}, 'USD', 0, 'succeeded', null, '', 'pm_card_visa',
           'bench order', ${tx.json({ order_id: key })}, null, ${`ch_sandbox_${id}`}, now())`,
      tx`insert into outbox (id, subject, type, payload, headers)
         values (${id}, 'trellis.billing.payment.succeeded', 'trellis.billing.v1.PaymentSucceeded',
           ${randomBytes(160)}, ${tx.json({})})`,
      tx`update idempotency_keys set response = ${randomBytes(190)} where tenant_id = ${tenantId} and key = ${key}`,
    ]);
    await tx`select pg_notify('trellis_outbox', '')`;
  });
}
