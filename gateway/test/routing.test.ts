import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import {
  AnalyticsService,
  WatchMetricsResponseSchema,
} from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { AuthService, GetJwksResponseSchema } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { BillingService } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import {
  CoreService,
  GetOrderRequestSchema,
  GetProductResponseSchema,
} from "@trellis/gen/trellis/core/v1/core_pb.js";
import { createTestIssuer, type TestIssuer } from "@trellis/kit/test-tokens.js";
import { routedServices } from "../src/routes.js";
import {
  allPermissions,
  everywhere,
  type StubBackend,
  startStubBackend,
  startTestGateway,
} from "./support/harness.js";

const internalMethods = [
  "trellis.billing.v1.BillingService/Charge",
  "trellis.billing.v1.BillingService/Refund",
  "trellis.billing.v1.BillingService/GetTenantBillingStatus",
  "trellis.auth.v1.AuthService/CheckPermission",
];

describe("gateway routing", () => {
  let issuer: TestIssuer;
  let backend: StubBackend;
  let gateway: Awaited<ReturnType<typeof startTestGateway>>;
  let token: string;
  let base: string;

  before(async () => {
    issuer = await createTestIssuer();
    backend = await startStubBackend("stub", issuer, {
      hooks: {
        GetJwks: () => create(GetJwksResponseSchema, { keys: issuer.jwks().keys as never }),
        async *WatchMetrics() {
          for (let i = 1; i <= 5; i++) {
            await sleep(10);
            yield create(WatchMetricsResponseSchema, { total: BigInt(i) });
          }
        },
        // GetProduct of "slow" waits for its deadline: deadline propagation.
        GetProduct: (req, ctx) =>
          (req as { productId: string }).productId === "slow"
            ? new Promise((_resolve, reject) =>
                ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)),
              )
            : create(GetProductResponseSchema),
      },
    });
    gateway = await startTestGateway(issuer, everywhere(backend.url), {
      CORS_ORIGINS: "https://app.example",
      MAX_BODY_BYTES: "4096",
      MAX_TIMEOUT: "30s",
    });
    base = gateway.baseUrl;
    token = await issuer.sign({ sub: "user-7", tid: "tenant-7", perms: allPermissions });
  });
  after(async () => {
    await gateway?.close();
    await backend?.close();
    await issuer?.close();
  });

  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${base}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}`, ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });

  test("every public and user RPC reaches its backend over Connect JSON", async () => {
    let count = 0;
    for (const service of routedServices()) {
      for (const method of service.methods) {
        if (method.methodKind !== "unary") continue;
        const res = await post(`/${service.desc.typeName}/${method.name}`, {});
        assert.equal(res.status, 200, `${method.name}: ${await res.clone().text()}`);
        assert.equal(res.headers.get("x-stub-method"), `${service.desc.typeName}/${method.name}`);
        count++;
      }
    }
    assert.ok(count > 40, `only ${count} unary methods routed`);
  });

  test("every streaming RPC streams through", async () => {
    const client = createClient(
      AnalyticsService,
      createConnectTransport({ baseUrl: base, httpVersion: "1.1" }),
    );
    const totals: bigint[] = [];
    for await (const res of client.watchMetrics({}, { headers: { authorization: `Bearer ${token}` } })) {
      totals.push(res.total);
    }
    assert.deepEqual(totals, [1n, 2n, 3n, 4n, 5n]);
  });

  test("internal RPCs are not routed and never reach a backend", async () => {
    const before = backend.calls.length;
    for (const path of internalMethods) {
      const res = await post(`/${path}`, {});
      assert.equal(res.status, 404, path);
    }
    const grpc = createGrpcTransport({ baseUrl: base });
    const billing = createClient(BillingService, grpc);
    await assert.rejects(
      billing.charge({}),
      (e: unknown) => ConnectError.from(e).code === Code.Unimplemented,
    );
    const auth = createClient(AuthService, createConnectTransport({ baseUrl: base, httpVersion: "1.1" }));
    await assert.rejects(
      auth.checkPermission({}, { headers: { authorization: `Bearer ${token}` } }),
      (e: unknown) => ConnectError.from(e).code === Code.Unimplemented,
    );
    assert.equal(backend.calls.length, before);
  });

  const transports: Array<[string, () => Transport]> = [
    ["Connect JSON over HTTP/1.1", () => createConnectTransport({ baseUrl: base, httpVersion: "1.1" })],
    [
      "Connect binary over HTTP/2",
      () => createConnectTransport({ baseUrl: base, httpVersion: "2", useBinaryFormat: true }),
    ],
    ["Connect GET", () => createConnectTransport({ baseUrl: base, httpVersion: "1.1", useHttpGet: true })],
    ["gRPC-Web over HTTP/1.1", () => createGrpcWebTransport({ baseUrl: base, httpVersion: "1.1" })],
    ["gRPC over HTTP/2", () => createGrpcTransport({ baseUrl: base })],
  ];
  for (const [name, transport] of transports) {
    test(`generated client: ${name}`, async () => {
      const core = createClient(CoreService, transport());
      const headers = new Headers();
      await core.getOrder(
        { orderId: "ord_1" },
        {
          headers: { authorization: `Bearer ${token}`, "x-request-id": "req-abc" },
          onHeader: (h) => {
            h.forEach((v, k) => {
              headers.set(k, v);
            });
          },
        },
      );
      assert.equal(headers.get("x-stub-method"), "trellis.core.v1.CoreService/GetOrder");
      assert.equal(headers.get("x-stub-user"), "user-7");
      assert.equal(headers.get("x-stub-request-id"), "req-abc");
      assert.equal(headers.get("x-request-id"), "req-abc");
      assert.match(headers.get("x-stub-forwarded-for") ?? "", /127\.0\.0\.1/);
      const totals: bigint[] = [];
      const analytics = createClient(AnalyticsService, transport());
      for await (const res of analytics.watchMetrics({}, { headers: { authorization: `Bearer ${token}` } })) {
        totals.push(res.total);
      }
      assert.equal(totals.length, 5);
    });
  }

  test("REST GET /v1/orders/{order_id} maps to CoreService.GetOrder", async () => {
    const res = await fetch(`${base}/v1/orders/ord%2F42`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-stub-method"), "trellis.core.v1.CoreService/GetOrder");
    assert.deepEqual(JSON.parse(decodeURIComponent(res.headers.get("x-stub-input") ?? "")), {
      orderId: "ord/42",
    });
    assert.deepEqual(await res.json(), {});
  });

  test("REST verbs, bodies and query parameters", async () => {
    const cases: Array<[string, string, unknown, string, unknown]> = [
      [
        "POST",
        "/v1/orders/o1:cancel",
        { reason: "changed mind" },
        "CancelOrder",
        { orderId: "o1", reason: "changed mind" },
      ],
      [
        "GET",
        "/v1/orders?page.page_size=5&statuses=ORDER_STATUS_PENDING&statuses=ORDER_STATUS_RESERVED",
        undefined,
        "ListOrders",
        { page: { pageSize: 5 }, statuses: ["ORDER_STATUS_PENDING", "ORDER_STATUS_RESERVED"] },
      ],
      ["DELETE", "/v1/auth/sessions/s-1", undefined, "RevokeSession", { sessionId: "s-1" }],
      ["POST", "/v1/analytics/track:batch", { events: [] }, "TrackBatch", {}],
      ["POST", "/v1/products/p1/stock:adjust", { delta: 3 }, "AdjustStock", { productId: "p1", delta: 3 }],
    ];
    for (const [method, path, body, rpc, input] of cases) {
      const res = await fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      assert.equal(res.status, 200, `${method} ${path}: ${await res.clone().text()}`);
      assert.equal(res.headers.get("x-stub-method")?.split("/")[1], rpc);
      assert.deepEqual(JSON.parse(decodeURIComponent(res.headers.get("x-stub-input") ?? "")), input, path);
    }
    const unknown = await fetch(`${base}/v1/orders?bogus=1`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(unknown.status, 400);
    assert.equal(((await unknown.json()) as { code: string }).code, "invalid_argument");
    assert.equal((await fetch(`${base}/v1/nothing-here`)).status, 404);
  });

  test("REST errors carry Connect codes and HTTP statuses", async () => {
    const res = await fetch(`${base}/v1/orders/o1`);
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { code: string }).code, "unauthenticated");
  });

  test("malformed JSON is invalid_argument", async () => {
    const res = await post("/trellis.core.v1.CoreService/GetOrder", "{not json");
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { code: string }).code, "invalid_argument");
    const rest = await fetch(`${base}/v1/orders`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: "[1,",
    });
    assert.equal(rest.status, 400);
    const wrongField = await post("/trellis.core.v1.CoreService/GetOrder", { orderId: 5, nope: true });
    assert.equal(wrongField.status, 400);
  });

  test("oversized bodies are refused", async () => {
    const big = { orderId: "x".repeat(10_000) };
    const res = await post("/trellis.core.v1.CoreService/GetOrder", big);
    assert.equal(((await res.json()) as { code: string }).code, "resource_exhausted");
    const core = createClient(CoreService, createGrpcTransport({ baseUrl: base }));
    await assert.rejects(
      core.getOrder(big, { headers: { authorization: `Bearer ${token}` } }),
      (e: unknown) => ConnectError.from(e).code === Code.ResourceExhausted,
    );
    const rest = await fetch(`${base}/v1/orders/o1:cancel`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ reason: "y".repeat(10_000) }),
    });
    assert.equal(rest.status, 413);
    assert.equal(toBinary(GetOrderRequestSchema, create(GetOrderRequestSchema, big)).length > 4096, true);
  });

  test("deadlines propagate, capped at the maximum", async () => {
    const core = createClient(CoreService, createConnectTransport({ baseUrl: base, httpVersion: "2" }));
    const auth = { authorization: `Bearer ${token}` };
    let seen = Number.NaN;
    await core.getOrder(
      {},
      { timeoutMs: 4000, headers: auth, onHeader: (h) => (seen = Number(h.get("x-stub-timeout-ms"))) },
    );
    assert.ok(seen > 0 && seen <= 4000, `backend saw ${seen}`);
    await core.getOrder(
      {},
      { timeoutMs: 600_000, headers: auth, onHeader: (h) => (seen = Number(h.get("x-stub-timeout-ms"))) },
    );
    assert.ok(seen > 0 && seen <= 30_000, `backend saw ${seen}`);
    await core.getOrder({}, { headers: auth, onHeader: (h) => (seen = Number(h.get("x-stub-timeout-ms"))) });
    assert.ok(seen > 0 && seen <= 15_000, `backend saw ${seen} without a client deadline`);
    await assert.rejects(
      core.getProduct({ productId: "slow" }, { timeoutMs: 200, headers: auth }),
      (e: unknown) => ConnectError.from(e).code === Code.DeadlineExceeded,
    );
  });

  test("CORS preflight and responses", async () => {
    const preflight = await fetch(`${base}/trellis.core.v1.CoreService/GetOrder`, {
      method: "OPTIONS",
      headers: {
        origin: "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, connect-protocol-version, authorization",
      },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get("access-control-allow-origin"), "https://app.example");
    const allowed = preflight.headers.get("access-control-allow-headers") ?? "";
    for (const h of [
      "connect-protocol-version",
      "connect-timeout-ms",
      "grpc-timeout",
      "x-grpc-web",
      "x-user-agent",
      "authorization",
    ]) {
      assert.ok(allowed.includes(h), `allows ${h}`);
    }
    assert.match(preflight.headers.get("access-control-allow-methods") ?? "", /POST/);
    const refused = await fetch(`${base}/trellis.core.v1.CoreService/GetOrder`, {
      method: "OPTIONS",
      headers: { origin: "https://evil.example", "access-control-request-method": "POST" },
    });
    assert.equal(refused.status, 403);
    assert.equal(refused.headers.get("access-control-allow-origin"), null);
    const res = await post("/trellis.core.v1.CoreService/GetOrder", {}, { origin: "https://app.example" });
    assert.equal(res.headers.get("access-control-allow-origin"), "https://app.example");
    const exposed = res.headers.get("access-control-expose-headers") ?? "";
    for (const h of ["grpc-status", "grpc-message", "grpc-status-details-bin", "retry-after"])
      assert.ok(exposed.includes(h));
  });

  test("request ids: generated when absent, echoed when given", async () => {
    const res = await post("/trellis.core.v1.CoreService/GetOrder", {});
    const id = res.headers.get("x-request-id");
    assert.ok(id && id.length >= 16);
    assert.equal(res.headers.get("x-stub-request-id"), id);
  });

  test("OpenAPI document from the contracts", async () => {
    const res = await fetch(`${base}/openapi.json`);
    assert.equal(res.status, 200);
    const doc = (await res.json()) as {
      openapi: string;
      paths: Record<string, Record<string, { security: unknown[]; parameters?: Array<{ name: string }> }>>;
      components: { schemas: Record<string, unknown> };
    };
    assert.equal(doc.openapi, "3.1.0");
    const getOrder = doc.paths["/v1/orders/{order_id}"]?.get;
    assert.ok(getOrder);
    assert.deepEqual(getOrder.security, [{ bearer: [] }]);
    assert.deepEqual(doc.paths["/v1/auth/login"]?.post?.security, []);
    assert.ok(doc.paths["/v1/orders/{order_id}:cancel"]?.post);
    assert.ok(doc.components.schemas["trellis.core.v1.Order"]);
    assert.equal(doc.paths["/trellis.billing.v1.BillingService/Charge"], undefined);
  });

  test("JWKS, health and readiness endpoints", async () => {
    const jwks = (await (await fetch(`${base}/.well-known/jwks.json`)).json()) as {
      keys: Array<{ kid: string }>;
    };
    assert.deepEqual(
      jwks.keys.map((k) => k.kid),
      issuer.jwks().keys.map((k) => k.kid),
    );
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    assert.equal((await fetch(`http://127.0.0.1:${gateway.adminPort}/readyz`)).status, 200);
    const metrics = await (await fetch(`http://127.0.0.1:${gateway.adminPort}/metrics`)).text();
    assert.match(
      metrics,
      /rpc_requests_total\{service="gateway",method="trellis.core.v1.CoreService\/GetOrder"/,
    );
  });
});
