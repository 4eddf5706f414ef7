import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createRouterTransport,
  type HandlerContext,
  type Interceptor,
} from "@connectrpc/connect";
import { AuthService } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { CoreService } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { createApi } from "../src/api.ts";
import { createSessionStore, type StoredSession } from "../src/session.ts";

const hour = 3_600_000;

function stored(accessToken: string, expiresIn = hour): StoredSession {
  return {
    accessToken,
    refreshToken: "r1",
    accessExpiresAt: Date.now() + expiresIn,
    sessionId: "s1",
    email: "a@example.com",
  };
}

/** An in-memory gateway: "good" is the only valid access token; Refresh works or is refused. */
function fakeGateway(refresh: "ok" | "refused") {
  const calls: { method: string; authorization: string | null }[] = [];
  const record = (method: string, ctx: HandlerContext) =>
    calls.push({ method, authorization: ctx.requestHeader.get("authorization") });
  const transport = (_baseUrl: string, interceptors: Interceptor[]) =>
    createRouterTransport(
      (router) => {
        router.service(AuthService, {
          async refresh(req, ctx) {
            record("Refresh", ctx);
            if (refresh === "refused" || req.refreshToken !== "r1")
              throw new ConnectError("refresh token not valid", Code.Unauthenticated);
            await new Promise((r) => setTimeout(r, 10));
            const accessTokenExpiresAt = timestampFromMs(Date.now() + hour);
            return {
              tokens: { accessToken: "good", refreshToken: "r2", sessionId: "s1", accessTokenExpiresAt },
            };
          },
          async login(_req, ctx) {
            record("Login", ctx);
            return { result: { case: "mfaRequired", value: {} } };
          },
        });
        router.service(CoreService, {
          async listProducts(_req, ctx) {
            record("ListProducts", ctx);
            if (ctx.requestHeader.get("authorization") !== "Bearer good")
              throw new ConnectError("token expired", Code.Unauthenticated);
            return { products: [] };
          },
        });
      },
      { transport: { interceptors } },
    );
  return { calls, transport };
}

describe("api: tokens on calls, refresh and retry", () => {
  test("an unauthenticated call refreshes once, retries with the new token and keeps the new pair", async () => {
    const gw = fakeGateway("ok");
    const session = createSessionStore();
    session.set(stored("stale"));
    const api = createApi({ baseUrl: "http://gateway", session, transport: gw.transport });
    await Promise.all([api.core.listProducts({}), api.core.listProducts({})]);
    assert.equal(gw.calls.filter((c) => c.method === "Refresh").length, 1);
    assert.equal(session.get()?.accessToken, "good");
    assert.equal(session.get()?.refreshToken, "r2");
    assert.deepEqual(
      gw.calls.filter((c) => c.method === "ListProducts").map((c) => c.authorization),
      ["Bearer stale", "Bearer stale", "Bearer good", "Bearer good"],
    );
  });

  test("a refused refresh ends the session: cleared, signed-out callback, unauthenticated thrown", async () => {
    const gw = fakeGateway("refused");
    const session = createSessionStore();
    session.set(stored("stale"));
    let signedOut = 0;
    const api = createApi({
      baseUrl: "http://gateway",
      session,
      transport: gw.transport,
      onSignedOut: () => signedOut++,
    });
    await assert.rejects(
      api.core.listProducts({}),
      (e) => ConnectError.from(e).code === Code.Unauthenticated,
    );
    assert.equal(session.get(), undefined);
    assert.equal(signedOut, 1);
  });

  test("a token about to expire is refreshed before the call", async () => {
    const gw = fakeGateway("ok");
    const session = createSessionStore();
    session.set(stored("stale", 5_000));
    const api = createApi({ baseUrl: "http://gateway", session, transport: gw.transport });
    await api.core.listProducts({});
    assert.deepEqual(
      gw.calls.map((c) => c.method),
      ["Refresh", "ListProducts"],
    );
    assert.equal(gw.calls[1]?.authorization, "Bearer good");
  });

  test("public methods carry no token", async () => {
    const gw = fakeGateway("ok");
    const session = createSessionStore();
    session.set(stored("good"));
    const api = createApi({ baseUrl: "http://gateway", session, transport: gw.transport });
    await api.auth.login({ email: "a@example.com", password: "x" });
    assert.equal(gw.calls[0]?.authorization, null);
  });
});
