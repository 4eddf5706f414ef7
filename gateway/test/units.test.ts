import assert from "node:assert/strict";
import { connect as h2connect } from "node:http2";
import { connect } from "node:net";
import { describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { CoreService } from "@trellis/gen/trellis/core/v1/core_pb.js";
import type { Principal } from "@trellis/kit/context.js";
import { createLogger } from "@trellis/kit/logger.js";
import { createCachingVerifier } from "@trellis/kit/token-cache.js";
import type { TokenVerifier } from "@trellis/kit/tokens.js";
import { listenDual } from "../src/listener.js";
import { buildOpenApi } from "../src/openapi.js";
import { compileTemplate, matchRoute, RestInputError, restRequestJson, restRoutes } from "../src/rest.js";
import { isRoutable, routedServices } from "../src/routes.js";

const logger = createLogger({ service: "gateway-test", level: "silent" });

describe("REST templates", () => {
  const cases: Array<[string, string, Record<string, string> | undefined]> = [
    ["/v1/orders/{order_id}", "/v1/orders/abc", { order_id: "abc" }],
    ["/v1/orders/{order_id}:cancel", "/v1/orders/abc:cancel", { order_id: "abc" }],
    ["/v1/orders/{order_id}:cancel", "/v1/orders/abc", undefined],
    ["/v1/products/{product_id}/stock:adjust", "/v1/products/p%201/stock:adjust", { product_id: "p 1" }],
    ["/v1/{name=shelves/*}/books", "/v1/shelves/7/books", { name: "shelves/7" }],
    ["/v1/{path=files/**}", "/v1/files/a/b/c", { path: "files/a/b/c" }],
    ["/v1/orders", "/v1/orders/", undefined],
  ];
  for (const [template, path, expected] of cases) {
    test(`${template} on ${path}`, () => {
      const { pattern, variables } = compileTemplate(template);
      const m = pattern.exec(path);
      if (!expected) return assert.equal(m, null);
      assert.ok(m);
      const got = Object.fromEntries(variables.map((v, i) => [v, decodeURIComponent(m[i + 1] ?? "")]));
      assert.deepEqual(got, expected);
    });
  }

  test("every annotated route compiles and only routable methods have routes", () => {
    const routes = restRoutes(routedServices().flatMap((s) => s.methods));
    assert.ok(routes.length > 30);
    for (const route of routes) assert.ok(isRoutable(route.method), route.template);
    const get = matchRoute(routes, "GET", "/v1/products/p1/stock");
    assert.equal(get?.route.method.name, "GetStock", "the more specific template wins");
    assert.equal(matchRoute(routes, "GET", "/v1/products/p1")?.route.method.name, "GetProduct");
    assert.equal(matchRoute(routes, "PUT", "/v1/products/p1"), undefined);
    const voided = matchRoute(routes, "POST", "/v1/billing/invoices/in_1:void");
    assert.equal(voided?.route.method.name, "VoidInvoice");
    assert.equal(voided?.params.get("invoice_id"), "in_1");
  });

  test("query parameters, path variables and bodies become the request's JSON", () => {
    const routes = restRoutes(CoreService.methods);
    const list = matchRoute(routes, "GET", "/v1/orders");
    assert.ok(list);
    const query = new URLSearchParams("page.pageSize=20&page.page_token=t&statuses=ORDER_STATUS_PENDING");
    assert.deepEqual(restRequestJson(list.route, list.params, query, undefined), {
      page: { pageSize: 20, pageToken: "t" },
      statuses: ["ORDER_STATUS_PENDING"],
    });
    assert.throws(
      () => restRequestJson(list.route, list.params, new URLSearchParams("nope=1"), undefined),
      RestInputError,
    );
    const cancel = matchRoute(routes, "POST", "/v1/orders/o9:cancel");
    assert.ok(cancel);
    assert.deepEqual(
      restRequestJson(cancel.route, cancel.params, new URLSearchParams(), { orderId: "x", reason: "r" }),
      {
        orderId: "o9",
        reason: "r",
      },
    );
    assert.throws(
      () => restRequestJson(cancel.route, cancel.params, new URLSearchParams(), [1]),
      RestInputError,
    );
  });

  test("the OpenAPI document covers REST and Connect paths with schemas", () => {
    const services = routedServices();
    const doc = buildOpenApi(services, restRoutes(services.flatMap((s) => s.methods))) as {
      paths: Record<string, Record<string, { parameters?: Array<{ name: string; in: string }> }>>;
      components: { schemas: Record<string, { properties?: Record<string, unknown> }> };
    };
    const params = doc.paths["/v1/orders"]?.get?.parameters ?? [];
    assert.ok(params.some((p) => p.name === "statuses" && p.in === "query"));
    assert.ok(doc.components.schemas["trellis.core.v1.Order"]?.properties?.createTime);
    assert.ok(doc.paths["/trellis.core.v1.CoreService/CreateOrder"]?.post);
  });
});

describe("token cache", () => {
  const principal = (sid: string): Principal => ({
    userId: "u",
    tenantId: "t",
    sessionId: sid,
    roles: [],
    permissions: new Set(),
    token: "",
  });
  const token = (expSec: number) =>
    `h.${Buffer.from(JSON.stringify({ exp: expSec, sid: "s1" })).toString("base64url")}.sig`;

  test("a verified token skips the signature check until the cache time or its exp, revocation always applies", async () => {
    let now = 1_000_000;
    let calls = 0;
    const revoked = new Set<string>();
    const inner: TokenVerifier = {
      async verify() {
        calls++;
        return principal("s1");
      },
    };
    const verifier = createCachingVerifier(inner, {
      ttlMs: 1000,
      isRevoked: (s) => revoked.has(s),
      now: () => now,
    });
    const long = token(now / 1000 + 600);
    await verifier.verify(long);
    await verifier.verify(long);
    assert.equal(calls, 1);
    now += 1000;
    await verifier.verify(long);
    assert.equal(calls, 2, "checked again after the cache time");
    const short = token(now / 1000 + 0.5);
    await verifier.verify(short);
    now += 600;
    await verifier.verify(short);
    assert.equal(calls, 4, "never trusted past exp");
    revoked.add("s1");
    await assert.rejects(
      verifier.verify(long),
      (e: unknown) => ConnectError.from(e).code === Code.Unauthenticated,
    );
  });
});

describe("one port for HTTP/1.1 and HTTP/2", () => {
  test("a request whose first bytes arrive one at a time is still told apart", async () => {
    const listener = await listenDual({
      host: "127.0.0.1",
      port: 0,
      logger,
      handler: (req, res) => res.end(`v${req.httpVersion}`),
    });
    try {
      const h1 = await new Promise<string>((resolve, reject) => {
        const socket = connect(listener.port, "127.0.0.1", () => {
          socket.write("P");
          setTimeout(
            () => socket.write("OST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
            20,
          );
        });
        let data = "";
        socket.on("data", (d) => {
          data += d;
        });
        socket.on("end", () => resolve(data));
        socket.on("error", reject);
      });
      assert.match(h1, /^HTTP\/1\.1 200/);
      assert.match(h1, /v1\.1$/);
      const session = h2connect(`http://127.0.0.1:${listener.port}`);
      const body = await new Promise<string>((resolve, reject) => {
        const stream = session.request({ ":path": "/" });
        let data = "";
        stream.on("data", (d) => {
          data += d;
        });
        stream.on("end", () => resolve(data));
        stream.on("error", reject);
      });
      session.close();
      assert.equal(body, "v2.0");
    } finally {
      await listener.close(100);
    }
  });
});
