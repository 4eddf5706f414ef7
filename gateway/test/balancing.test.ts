import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CoreService, GetOrderResponseSchema } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { createLogger } from "@trellis/kit/logger.js";
import { createTestIssuer, type TestIssuer } from "@trellis/kit/test-tokens.js";
import { eventually, freePort } from "@trellis/kit/testing.js";
import { createInstancePool, type InstancePool, isConnectionFailure } from "../src/balancer.js";
import {
  allPermissions,
  everywhere,
  type KillableProxy,
  type StubBackend,
  startKillableProxy,
  startStubBackend,
  startTestGateway,
} from "./support/harness.js";

const logger = createLogger({ service: "gateway-test", level: "silent" });
const unavailable = () => new ConnectError("down", Code.Unavailable);

describe("instance pool", () => {
  let now = 0;
  let pool: InstancePool;
  before(() => {
    pool = createInstancePool({
      name: "core",
      urls: ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"],
      healthService: "trellis.core.v1.CoreService",
      ejectAfter: 3,
      cooldownMs: 1000,
      healthIntervalMs: 0,
      logger,
      now: () => now,
    });
  });
  after(() => pool.close());
  const at = (i: number) => () => pool.instances[i] as InstancePool["instances"][number];
  const [a, b, c] = [at(0), at(1), at(2)];

  test("picks the instance with the fewest calls in flight, skipping excluded ones", () => {
    a().inFlight = 2;
    b().inFlight = 0;
    c().inFlight = 1;
    for (let i = 0; i < 5; i++) assert.equal(pool.pick(), b());
    assert.equal(pool.pick(new Set([b()])), c());
    assert.equal(pool.pick(new Set([a(), b(), c()])), undefined);
    for (const i of pool.instances) i.inFlight = 0;
    const seen = new Set(Array.from({ length: 6 }, () => pool.pick()));
    assert.equal(seen.size, 3, "ties rotate over every instance");
  });

  test("ejects after consecutive connection failures, probes back after the cooldown", () => {
    pool.record(a(), unavailable());
    pool.record(a(), unavailable());
    pool.record(a(), undefined);
    pool.record(a(), unavailable());
    pool.record(a(), unavailable());
    assert.ok(pool.usable().includes(a()), "a success resets the count");
    pool.record(a(), new ConnectError("no such order", Code.NotFound));
    pool.record(a(), unavailable());
    pool.record(a(), unavailable());
    pool.record(a(), unavailable());
    assert.ok(!pool.usable().includes(a()));
    for (let i = 0; i < 10; i++) assert.notEqual(pool.pick(), a());
    now += 1000;
    assert.ok(pool.usable().includes(a()), "back after the cooldown");
    pool.record(a(), unavailable());
    assert.ok(!pool.usable().includes(a()), "one more failure while probing ejects again");
    now += 1000;
    assert.ok(!pool.usable().includes(a()), "the second cooldown is longer");
    now += 1000;
    pool.record(a(), undefined);
    assert.ok(pool.usable().includes(a()));
  });

  test("when every instance is out, the one back soonest is still tried", () => {
    for (const [i, instance] of pool.instances.entries()) {
      instance.failures = 3;
      instance.ejectedUntil = now + 1000 * (3 - i);
    }
    assert.equal(pool.pick(), c());
    for (const instance of pool.instances) pool.record(instance, undefined);
    for (const instance of pool.instances) instance.ejectedUntil = 0;
  });

  test("connection failures are told apart from answers", () => {
    assert.equal(isConnectionFailure(unavailable()), true);
    assert.equal(isConnectionFailure(new ConnectError("x", Code.Aborted)), false);
    const reset = Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
    assert.equal(isConnectionFailure(new ConnectError("x", Code.Aborted, undefined, undefined, reset)), true);
  });
});

describe("active health checks", () => {
  let issuer: TestIssuer;
  let healthy: StubBackend;
  let draining: StubBackend;
  before(async () => {
    issuer = await createTestIssuer();
    healthy = await startStubBackend("healthy", issuer);
    draining = await startStubBackend("draining", issuer);
  });
  after(async () => {
    await healthy?.close();
    await draining?.close();
    await issuer?.close();
  });

  test("instances answering NOT_SERVING or not answering are taken out", async () => {
    const pool = createInstancePool({
      name: "core",
      urls: [healthy.url, draining.url, `http://127.0.0.1:${await freePort()}`],
      healthService: "trellis.core.v1.CoreService",
      healthIntervalMs: 0,
      logger,
    });
    try {
      await pool.checkHealth();
      assert.deepEqual(
        pool.usable().map((i) => i.url),
        [healthy.url, draining.url],
      );
      draining.running.health.shutdown();
      await pool.checkHealth();
      assert.deepEqual(
        pool.usable().map((i) => i.url),
        [healthy.url],
      );
    } finally {
      pool.close();
    }
  });
});

describe("load balancing through the gateway", () => {
  let issuer: TestIssuer;
  let backends: StubBackend[];
  let proxies: KillableProxy[];
  let gateway: Awaited<ReturnType<typeof startTestGateway>>;
  let token: string;
  const held: Array<() => void> = [];

  before(async () => {
    issuer = await createTestIssuer();
    const hooks = {
      GetOrder: async (req: unknown) => {
        if ((req as { orderId: string }).orderId === "hold") await new Promise<void>((r) => held.push(r));
        return create(GetOrderResponseSchema);
      },
    };
    backends = [
      await startStubBackend("a", issuer, { hooks }),
      await startStubBackend("b", issuer, { hooks }),
    ];
    proxies = [
      await startKillableProxy(backends[0]?.url ?? ""),
      await startKillableProxy(backends[1]?.url ?? ""),
    ];
    gateway = await startTestGateway(issuer, everywhere(...proxies.map((p) => p.url)), {
      RATE_LIMITS: JSON.stringify({ default: { address: null, user: null, tenant: null } }),
      EJECT_AFTER_FAILURES: "3",
      EJECT_COOLDOWN: "60s",
    });
    token = await issuer.sign({ perms: allPermissions });
  });
  after(async () => {
    for (const release of held) release();
    await gateway?.close();
    for (const p of proxies ?? []) await p.kill();
    for (const b of backends ?? []) await b.close();
    await issuer?.close();
  });

  const getOrder = (orderId: string) =>
    fetch(`${gateway.baseUrl}/trellis.core.v1.CoreService/GetOrder`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ orderId }),
    });

  test("least outstanding requests: calls avoid the instance holding a slow call", async () => {
    const slow = getOrder("hold");
    const holder = await eventually(
      () => backends.flatMap((b) => b.calls).find((c) => c.method === "GetOrder")?.instance,
    );
    const instances: string[] = [];
    for (let i = 0; i < 10; i++)
      instances.push((await getOrder("quick")).headers.get("x-stub-instance") ?? "");
    assert.ok(
      instances.every((name) => name !== holder),
      `${instances} avoided ${holder}`,
    );
    held.shift()?.();
    assert.equal((await slow).status, 200);
  });

  test("one of two instances killed under load fails no idempotent request", async () => {
    const workers = 8;
    const perWorker = 50;
    let done = 0;
    let killed = false;
    const failures: string[] = [];
    const served = new Map<string, number>();
    await Promise.all(
      Array.from({ length: workers }, async () => {
        for (let i = 0; i < perWorker; i++) {
          const res = await getOrder(`o-${i}`);
          if (res.status !== 200) failures.push(`${res.status} ${await res.text()}`);
          else await res.arrayBuffer();
          const instance = res.headers.get("x-stub-instance") ?? "?";
          served.set(
            `${instance}${killed ? "+" : ""}`,
            (served.get(`${instance}${killed ? "+" : ""}`) ?? 0) + 1,
          );
          if (++done === 100) {
            killed = true;
            void proxies[0]?.kill();
          }
        }
      }),
    );
    assert.deepEqual(failures, []);
    assert.ok((served.get("a") ?? 0) > 0, "a served before it died");
    assert.ok((served.get("b+") ?? 0) > 0, "b took over");
    const a = gateway.pools.core.instances[0];
    assert.ok(a && !gateway.pools.core.usable().includes(a), "the dead instance is ejected");
  });

  test("a non-idempotent call is retried only when it was never sent", async () => {
    // a is dead: its connections are refused, so CancelOrder (no idempotency level) is resent to b.
    const [a, b] = gateway.pools.core.instances;
    assert.ok(a && b);
    a.ejectedUntil = 0;
    a.failures = 0;
    b.inFlight += 100;
    try {
      const core = createClient(
        CoreService,
        createConnectTransport({ baseUrl: gateway.baseUrl, httpVersion: "1.1" }),
      );
      await core.cancelOrder({ orderId: "o" }, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(a.failures, 1, "a was tried first");
    } finally {
      b.inFlight -= 100;
    }
  });
});

describe("a crash in the middle of a call", () => {
  let issuer: TestIssuer;
  let backends: StubBackend[];
  let proxies: KillableProxy[];
  let gateway: Awaited<ReturnType<typeof startTestGateway>>;
  let token: string;

  before(async () => {
    issuer = await createTestIssuer();
    const crash = (i: number) => async () => {
      await proxies[i]?.kill();
      await sleep(20);
      return {};
    };
    // Each backend dies while answering CancelOrder (not idempotent) or GetOrder (idempotent).
    backends = [
      await startStubBackend("a", issuer, { hooks: { CancelOrder: crash(0), GetOrder: crash(0) } }),
      await startStubBackend("b", issuer),
    ];
    proxies = [
      await startKillableProxy(backends[0]?.url ?? ""),
      await startKillableProxy(backends[1]?.url ?? ""),
    ];
    token = await issuer.sign({ perms: allPermissions });
  });
  after(async () => {
    await gateway?.close();
    for (const p of proxies ?? []) await p.kill();
    for (const b of backends ?? []) await b.close();
    await issuer?.close();
  });

  test("is resent for an idempotent method, and answered unavailable for another", async () => {
    // Only a at first, so the first call surely lands there; b is reachable for the retry.
    gateway = await startTestGateway(issuer, {
      ...everywhere(proxies[0]?.url ?? "", proxies[1]?.url ?? ""),
    });
    const core = createClient(
      CoreService,
      createConnectTransport({ baseUrl: gateway.baseUrl, httpVersion: "1.1" }),
    );
    const auth = { headers: { authorization: `Bearer ${token}` } };
    // Steer the first call to a: b has a call in flight.
    const b = gateway.pools.core.instances[1];
    assert.ok(b);
    b.inFlight += 100;
    await assert.rejects(
      core.cancelOrder({ orderId: "o" }, auth),
      (e: unknown) => ConnectError.from(e).code === Code.Unavailable,
    );
    assert.equal(backends[1]?.calls.filter((c) => c.method === "CancelOrder").length, 0, "not resent");
    b.inFlight -= 100;
    await gateway.close();

    // The same crash during GetOrder (NO_SIDE_EFFECTS) is invisible: b answers.
    proxies[0] = await startKillableProxy(backends[0]?.url ?? "");
    gateway = await startTestGateway(issuer, everywhere(proxies[0].url, proxies[1]?.url ?? ""));
    const core2 = createClient(
      CoreService,
      createConnectTransport({ baseUrl: gateway.baseUrl, httpVersion: "1.1" }),
    );
    const b2 = gateway.pools.core.instances[1];
    assert.ok(b2);
    b2.inFlight += 100;
    let instance = "";
    await core2.getOrder(
      { orderId: "o" },
      { ...auth, onHeader: (h) => (instance = h.get("x-stub-instance") ?? "") },
    );
    b2.inFlight -= 100;
    assert.equal(instance, "b");
    assert.equal(backends[0]?.calls.filter((c) => c.method === "GetOrder").length, 1, "a got it first");
  });
});
