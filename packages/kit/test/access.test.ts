import assert from "node:assert/strict";
import { createServer, type Http2Server, type ServerHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient, createContextValues, type Transport } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus } from "@trellis/gen/grpc/health/v1/health_pb.js";
import { TestService } from "@trellis/gen/trellis/testing/v1/testing_pb.js";
import { createAccessInterceptor, methodAccess, requirePrincipal } from "../src/access.ts";
import { callerServiceKey, type Principal, principalKey } from "../src/context.ts";
import { createTestIssuer, type TestIssuer } from "../src/test-tokens.ts";

// Test-only stand-in for the service identity: the real server derives callerServiceKey from the
// caller's mTLS certificate (tested elsewhere); here a plain header sets it through contextValues.
const callerHeader = "x-test-caller";

interface TestServer {
  readonly baseUrl: string;
  /** The principal the last Echo call saw. */
  lastEchoPrincipal: Principal | undefined;
  close(): Promise<void>;
}

async function startServer(issuer: TestIssuer): Promise<TestServer> {
  const state: TestServer = {
    baseUrl: "",
    lastEchoPrincipal: undefined,
    close: async () => {},
  };
  const handler = connectNodeAdapter({
    interceptors: [createAccessInterceptor({ verifier: issuer.verifier() })],
    contextValues(req) {
      const caller = req.headers[callerHeader];
      return createContextValues().set(callerServiceKey, typeof caller === "string" ? caller : undefined);
    },
    routes(router) {
      router.service(TestService, {
        echo(req, ctx) {
          state.lastEchoPrincipal = ctx.values.get(principalKey);
          return { text: req.text };
        },
        whoami(_req, ctx) {
          const p = requirePrincipal(ctx);
          return {
            userId: p.userId,
            tenantId: p.tenantId,
            sessionId: p.sessionId,
            permissions: [...p.permissions],
          };
        },
        internalPing(_req, ctx) {
          return { caller: ctx.values.get(callerServiceKey) ?? "" };
        },
        sleep() {
          return {};
        },
        async *count() {},
      });
      router.service(Health, {
        check: () => ({ status: HealthCheckResponse_ServingStatus.SERVING }),
        async *watch() {},
        list: () => ({}),
      });
    },
  });
  const server: Http2Server = createServer(handler);
  const sessions = new Set<ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return Object.assign(state, {
    baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      for (const s of sessions) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}

async function expectCode(promise: Promise<unknown>, code: Code): Promise<void> {
  try {
    await promise;
  } catch (error) {
    const e = ConnectError.from(error);
    assert.equal(e.code, code, `expected ${Code[code]}, got ${Code[e.code]}: ${e.message}`);
    return;
  }
  assert.fail(`expected ${Code[code]}, but the call succeeded`);
}

/** Call headers: an optional bearer token and an optional (test) service identity. */
function as(opts: { token?: string; caller?: string }) {
  const headers: Record<string, string> = {};
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  if (opts.caller !== undefined) headers[callerHeader] = opts.caller;
  return { headers };
}

describe("methodAccess", () => {
  it("reads the contract's access option", () => {
    assert.deepEqual(methodAccess(TestService.method.echo), {
      audience: "public",
      permission: "",
      callers: [],
    });
    assert.deepEqual(methodAccess(TestService.method.whoami), {
      audience: "user",
      permission: "testing.whoami",
      callers: [],
    });
    assert.deepEqual(methodAccess(TestService.method.internalPing), {
      audience: "internal",
      permission: "",
      callers: ["core"],
    });
    assert.equal(methodAccess(Health.method.check), undefined);
  });
});

for (const [protocol, makeTransport] of [
  ["grpc", (baseUrl: string) => createGrpcTransport({ baseUrl })],
  ["connect", (baseUrl: string) => createConnectTransport({ baseUrl, httpVersion: "2" })],
] as Array<[string, (baseUrl: string) => Transport]>) {
  describe(`access interceptor over ${protocol}`, () => {
    let issuer: TestIssuer;
    let stranger: TestIssuer;
    let server: TestServer;
    let client: ReturnType<typeof createClient<typeof TestService>>;
    let health: ReturnType<typeof createClient<typeof Health>>;
    let whoamiToken: string;
    let plainToken: string;
    before(async () => {
      issuer = await createTestIssuer();
      stranger = await createTestIssuer();
      server = await startServer(issuer);
      const transport = makeTransport(server.baseUrl);
      client = createClient(TestService, transport);
      health = createClient(Health, transport);
      whoamiToken = await issuer.sign({ sub: "u1", tid: "t1", sid: "s1", perms: ["testing.whoami"] });
      plainToken = await issuer.sign({ sub: "u2", tid: "t1", sid: "s2", perms: ["billing.invoices.read"] });
    });
    after(() => server.close());

    describe("user method (Whoami, needs testing.whoami)", () => {
      it("rejects a call without a token as unauthenticated", async () => {
        await expectCode(client.whoami({}), Code.Unauthenticated);
      });
      it("rejects a malformed authorization header as unauthenticated", async () => {
        await expectCode(
          client.whoami({}, { headers: { authorization: "Basic dTpw" } }),
          Code.Unauthenticated,
        );
      });
      it("rejects a forged token as unauthenticated", async () => {
        await expectCode(
          client.whoami({}, as({ token: await stranger.sign({ kid: issuer.kid }) })),
          Code.Unauthenticated,
        );
      });
      it("rejects an expired token as unauthenticated", async () => {
        const expired = await issuer.sign({
          issuedAt: Math.floor(Date.now() / 1000) - 600,
          perms: ["testing.whoami"],
        });
        await expectCode(client.whoami({}, as({ token: expired })), Code.Unauthenticated);
      });
      it("rejects a token without the permission as permission denied", async () => {
        await expectCode(client.whoami({}, as({ token: plainToken })), Code.PermissionDenied);
      });
      it("answers the principal for a token with the permission", async () => {
        const res = await client.whoami({}, as({ token: whoamiToken }));
        assert.equal(res.userId, "u1");
        assert.equal(res.tenantId, "t1");
        assert.equal(res.sessionId, "s1");
        assert.deepEqual(res.permissions, ["testing.whoami"]);
      });
      it("lets a service call it only with a forwarded user token", async () => {
        await expectCode(client.whoami({}, as({ caller: "core" })), Code.Unauthenticated);
        await expectCode(client.whoami({}, as({ caller: "core", token: plainToken })), Code.PermissionDenied);
        assert.equal((await client.whoami({}, as({ caller: "core", token: whoamiToken }))).userId, "u1");
      });
    });

    describe("internal method (InternalPing, callers: core)", () => {
      it("accepts the core service", async () => {
        assert.equal((await client.internalPing({}, as({ caller: "core" }))).caller, "core");
      });
      it("rejects another service as permission denied", async () => {
        await expectCode(client.internalPing({}, as({ caller: "billing" })), Code.PermissionDenied);
      });
      it("rejects a call with no identity at all as unauthenticated", async () => {
        await expectCode(client.internalPing({}), Code.Unauthenticated);
      });
      it("rejects a user token alone as permission denied", async () => {
        await expectCode(client.internalPing({}, as({ token: whoamiToken })), Code.PermissionDenied);
      });
      it("rejects another service even when it forwards a user token", async () => {
        await expectCode(
          client.internalPing({}, as({ caller: "billing", token: whoamiToken })),
          Code.PermissionDenied,
        );
      });
    });

    describe("public method (Echo)", () => {
      it("needs no token", async () => {
        assert.equal((await client.echo({ text: "hi" })).text, "hi");
        assert.equal(server.lastEchoPrincipal, undefined);
      });
      it("sets the principal when a valid token comes along", async () => {
        await client.echo({ text: "hi" }, as({ token: plainToken }));
        assert.equal(server.lastEchoPrincipal?.userId, "u2");
      });
      it("ignores an invalid token", async () => {
        assert.equal((await client.echo({ text: "hi" }, as({ token: "garbage" }))).text, "hi");
        assert.equal(server.lastEchoPrincipal, undefined);
      });
    });

    it("passes methods without an access option (grpc.health) untouched", async () => {
      const res = await health.check({});
      assert.equal(res.status, HealthCheckResponse_ServingStatus.SERVING);
    });
  });
}

describe("requirePrincipal", () => {
  it("throws unauthenticated without a principal", () => {
    assert.throws(
      () => requirePrincipal({ values: createContextValues() }),
      (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated,
    );
  });
});
