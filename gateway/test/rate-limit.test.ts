import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { RetryInfoSchema } from "@trellis/gen/google/rpc/error_details_pb.js";
import { CoreService } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { createTestIssuer, type TestIssuer } from "@trellis/kit/test-tokens.js";
import { builtInRateLimits, createRateLimiter, parseRateLimits } from "../src/rate-limit.js";
import {
  allPermissions,
  everywhere,
  type StubBackend,
  startStubBackend,
  startTestGateway,
} from "./support/harness.js";

describe("token buckets", () => {
  test("a bucket allows its burst, then refills at its rate", () => {
    let now = 0;
    const limiter = createRateLimiter({
      limits: { default: { user: { rate: 2, burst: 3 } }, methods: {} },
      now: () => now,
    });
    for (let i = 0; i < 3; i++) assert.equal(limiter.take("m", { user: "a" }), 0);
    assert.equal(limiter.take("m", { user: "a" }), 0.5);
    assert.equal(limiter.take("m", { user: "b" }), 0, "other users have their own bucket");
    now += 499;
    assert.ok(limiter.take("m", { user: "a" }) > 0);
    now += 1;
    assert.equal(limiter.take("m", { user: "a" }), 0);
    assert.ok(limiter.take("m", { user: "a" }) > 0);
  });

  test("a refused call takes no token from any bucket", () => {
    let now = 0;
    const limiter = createRateLimiter({
      limits: { default: { user: { rate: 1, burst: 1 }, tenant: { rate: 1, burst: 2 } }, methods: {} },
      now: () => now,
    });
    assert.equal(limiter.take("m", { user: "a", tenant: "t" }), 0);
    assert.ok(limiter.take("m", { user: "a", tenant: "t" }) > 0);
    assert.equal(limiter.take("m", { user: "b", tenant: "t" }), 0, "tenant kept its second token");
    assert.ok(limiter.take("m", { user: "c", tenant: "t" }) > 0, "tenant bucket empty");
    now += 1000;
    assert.equal(limiter.take("m", { user: "c", tenant: "t" }), 0);
  });

  test("methods with their own limit use their own buckets; null turns a scope off", () => {
    const limiter = createRateLimiter({
      limits: {
        default: { address: { rate: 1, burst: 1 } },
        methods: { "s/Login": { address: { rate: 1, burst: 2 } }, "s/Free": { address: null } },
      },
      now: () => 0,
    });
    assert.equal(limiter.take("s/Other", { address: "1.2.3.4" }), 0);
    assert.ok(limiter.take("s/Another", { address: "1.2.3.4" }) > 0, "default bucket is shared");
    assert.equal(limiter.take("s/Login", { address: "1.2.3.4" }), 0);
    assert.equal(limiter.take("s/Login", { address: "1.2.3.4" }), 0);
    assert.ok(limiter.take("s/Login", { address: "1.2.3.4" }) > 0);
    for (let i = 0; i < 10; i++) assert.equal(limiter.take("s/Free", { address: "1.2.3.4" }), 0);
  });

  test("memory stays bounded: least recently used buckets go, full ones are swept", () => {
    let now = 0;
    const limiter = createRateLimiter({
      limits: { default: { address: { rate: 1, burst: 5 } }, methods: {} },
      now: () => now,
      maxBuckets: 100,
    });
    for (let i = 0; i < 1000; i++) limiter.take("m", { address: `10.0.${i >> 8}.${i & 255}` });
    assert.equal(limiter.size, 100);
    now += 10_000;
    limiter.sweep();
    assert.equal(limiter.size, 0);
  });

  test("RATE_LIMITS parses on top of the built-in limits and rejects nonsense", () => {
    const limits = parseRateLimits(
      '{"default":{"user":{"rate":5,"burst":10}},"methods":{"a.B/C":{"tenant":null}}}',
    );
    assert.deepEqual(limits.default.user, { rate: 5, burst: 10 });
    assert.deepEqual(limits.default.address, builtInRateLimits.default.address);
    assert.equal(limits.methods["a.B/C"]?.tenant, null);
    assert.ok(limits.methods["trellis.auth.v1.AuthService/Login"]?.address);
    for (const bad of [
      "[]",
      '{"default":{"ip":{"rate":1,"burst":1}}}',
      '{"default":{"user":{"rate":0,"burst":1}}}',
      '{"methods":{"Login":{}}}',
      '{"other":1}',
      "{",
    ]) {
      assert.throws(() => parseRateLimits(bad), bad);
    }
  });
});

describe("rate limits through the gateway", () => {
  let issuer: TestIssuer;
  let backend: StubBackend;
  let gateway: Awaited<ReturnType<typeof startTestGateway>>;
  let now = 1_000_000;

  before(async () => {
    issuer = await createTestIssuer();
    backend = await startStubBackend("stub", issuer);
    gateway = await startTestGateway(
      issuer,
      everywhere(backend.url),
      {
        RATE_LIMITS: JSON.stringify({
          default: { user: { rate: 1, burst: 3 }, tenant: { rate: 1, burst: 4 } },
          methods: { "trellis.auth.v1.AuthService/Login": { address: { rate: 0.5, burst: 2 } } },
        }),
      },
      { now: () => now },
    );
  });
  after(async () => {
    await gateway?.close();
    await backend?.close();
    await issuer?.close();
  });

  const getOrder = (token: string) =>
    fetch(`${gateway.baseUrl}/trellis.core.v1.CoreService/GetOrder`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: "{}",
    });

  test("per user: the burst passes, the next call is 429 with Retry-After, and the bucket recovers", async () => {
    const token = await issuer.sign({ sub: "u-a", tid: "t-a", perms: allPermissions });
    for (let i = 0; i < 3; i++) assert.equal((await getOrder(token)).status, 200, `call ${i}`);
    const limited = await getOrder(token);
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get("retry-after"), "1");
    assert.equal(((await limited.json()) as { code: string }).code, "resource_exhausted");
    const core = createClient(CoreService, createGrpcTransport({ baseUrl: gateway.baseUrl }));
    await assert.rejects(
      core.getOrder({}, { headers: { authorization: `Bearer ${token}` } }),
      (e: unknown) => {
        const error = ConnectError.from(e);
        assert.equal(error.code, Code.ResourceExhausted);
        assert.equal(error.metadata.get("retry-after"), "1");
        assert.equal(error.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds, 1n);
        return true;
      },
    );
    now += 1000;
    assert.equal((await getOrder(token)).status, 200);
    assert.equal((await getOrder(token)).status, 429);
  });

  test("per tenant: users of one tenant share its bucket", async () => {
    now += 60_000;
    const a = await issuer.sign({ sub: "u-1", tid: "t-shared", perms: allPermissions });
    const b = await issuer.sign({ sub: "u-2", tid: "t-shared", perms: allPermissions });
    const c = await issuer.sign({ sub: "u-3", tid: "t-other", perms: allPermissions });
    for (let i = 0; i < 3; i++) assert.equal((await getOrder(a)).status, 200);
    assert.equal((await getOrder(b)).status, 200);
    assert.equal((await getOrder(b)).status, 429, "tenant bucket spent");
    assert.equal((await getOrder(c)).status, 200, "another tenant is untouched");
  });

  test("Login has its own stricter limit per address", async () => {
    now += 60_000;
    const login = () =>
      fetch(`${gateway.baseUrl}/v1/auth/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "a@example.com", password: "pw" }),
      });
    assert.equal((await login()).status, 200);
    assert.equal((await login()).status, 200);
    const limited = await login();
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get("retry-after"), "2");
    const jwks = await fetch(`${gateway.baseUrl}/trellis.auth.v1.AuthService/GetJwks`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(jwks.status, 200, "other public methods use the default address bucket");
    now += 2000;
    assert.equal((await login()).status, 200);
  });
});
