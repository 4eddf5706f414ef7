import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { AuthService, GetJwksResponseSchema } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { SessionRevokedSchema } from "@trellis/gen/trellis/auth/v1/events_pb.js";
import { CoreService } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { eventHeaders, uuidv7 } from "@trellis/kit/events.js";
import { ServingStatus } from "@trellis/kit/health.js";
import { ensureStream } from "@trellis/kit/nats.js";
import { createTestIssuer, type TestIssuer } from "@trellis/kit/test-tokens.js";
import { eventually, startNatsServer, type TestNatsServer } from "@trellis/kit/testing.js";
import { connect, type NatsConnection } from "nats";
import {
  allPermissions,
  everywhere,
  type StubBackend,
  startStubBackend,
  startTestGateway,
} from "./support/harness.js";

const isCode = (code: Code) => (e: unknown) => ConnectError.from(e).code === code;

describe("gateway authentication", () => {
  let issuer: TestIssuer;
  let backend: StubBackend;
  let natsServer: TestNatsServer;
  let nc: NatsConnection;
  let gateway: Awaited<ReturnType<typeof startTestGateway>>;
  let core: ReturnType<typeof createClient<typeof CoreService>>;

  const publishRevoked = async (sessionId: string, expiresInMs: number) => {
    const event = create(SessionRevokedSchema, {
      sessionId,
      userId: "user-1",
      tenantId: "tenant-1",
      accessTokensExpireAt: timestampFromMs(Date.now() + expiresInMs),
      occurredAt: timestampFromMs(Date.now()),
    });
    const id = uuidv7();
    await nc.jetstream().publish("trellis.auth.session.revoked", toBinary(SessionRevokedSchema, event), {
      msgID: id,
      headers: eventHeaders({ id, type: SessionRevokedSchema.typeName, service: "auth", time: new Date() }),
    });
  };

  before(async () => {
    issuer = await createTestIssuer();
    natsServer = await startNatsServer();
    nc = await connect({ servers: natsServer.url });
    await ensureStream(await nc.jetstreamManager(), { name: "AUTH", subjects: ["trellis.auth.>"] });
    backend = await startStubBackend("stub", issuer);
    gateway = await startTestGateway(issuer, everywhere(backend.url), {
      REVOCATIONS: "true",
      NATS_URL: natsServer.url,
    });
    core = createClient(
      CoreService,
      createConnectTransport({ baseUrl: gateway.baseUrl, httpVersion: "1.1" }),
    );
  });
  after(async () => {
    await gateway?.close();
    await backend?.close();
    await nc?.close();
    await natsServer?.dispose();
    await issuer?.close();
  });

  const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

  test("a valid token passes and is forwarded", async () => {
    let user = "";
    await core.getOrder(
      { orderId: "o" },
      {
        ...bearer(await issuer.sign({ sub: "u-9", perms: allPermissions })),
        onHeader: (h) => (user = h.get("x-stub-user") ?? ""),
      },
    );
    assert.equal(user, "u-9");
  });

  test("public methods need no token", async () => {
    const auth = createClient(
      AuthService,
      createConnectTransport({ baseUrl: gateway.baseUrl, httpVersion: "1.1" }),
    );
    await auth.login({ email: "a@example.com", password: "x" });
    await auth.getJwks({});
  });

  test("missing, expired, forged and malformed tokens are unauthenticated and never forwarded", async () => {
    const other = await createTestIssuer({ issuer: issuer.issuer, audience: issuer.audience });
    const expired = await issuer.sign({ issuedAt: Math.floor(Date.now() / 1000) - 600, expiresIn: 300 });
    const forged = await other.sign();
    const wrongKid = await other.sign({ kid: issuer.kid });
    const [h, p] = (await issuer.sign()).split(".");
    const tampered = `${h}.${p}.${Buffer.from("not a signature").toString("base64url")}`;
    const wrongAudience = await issuer.sign({ audience: "someone-else" });
    const calls = backend.calls.length;
    await assert.rejects(core.getOrder({ orderId: "o" }), isCode(Code.Unauthenticated));
    for (const token of [expired, forged, wrongKid, tampered, wrongAudience, "not-a-jwt"]) {
      await assert.rejects(core.getOrder({ orderId: "o" }, bearer(token)), isCode(Code.Unauthenticated));
    }
    const res = await fetch(`${gateway.baseUrl}/v1/orders/o1`, {
      headers: { authorization: `Bearer ${forged}` },
    });
    assert.equal(res.status, 401);
    assert.equal(backend.calls.length, calls);
    await other.close();
  });

  test("a missing permission is permission_denied at the gateway", async () => {
    const token = await issuer.sign({ perms: [] });
    const billing = createClient(
      (await import("@trellis/gen/trellis/billing/v1/billing_pb.js")).BillingService,
      createGrpcTransport({ baseUrl: gateway.baseUrl }),
    );
    await assert.rejects(billing.createPlan({}, bearer(token)), isCode(Code.PermissionDenied));
  });

  test("a revoked session is rejected as soon as the event arrives", async () => {
    const sid = `sess-${uuidv7()}`;
    const token = await issuer.sign({ sid, perms: allPermissions });
    const otherToken = await issuer.sign({ perms: allPermissions });
    await core.getOrder({ orderId: "o" }, bearer(token));
    await eventually(() => gateway.health.status() === ServingStatus.SERVING, {
      what: "revocation feed attached",
    });
    await publishRevoked(sid, 10 * 60_000);
    await eventually(
      async () => {
        try {
          await core.getOrder({ orderId: "o" }, bearer(token));
          return false;
        } catch (error) {
          return ConnectError.from(error).code === Code.Unauthenticated;
        }
      },
      { what: "revoked token refused" },
    );
    await core.getOrder({ orderId: "o" }, bearer(otherToken));
    // A gateway started later learns of the revocation from the stream's recent history.
    const late = await startTestGateway(issuer, everywhere(backend.url), {
      REVOCATIONS: "true",
      NATS_URL: natsServer.url,
    });
    try {
      const lateCore = createClient(
        CoreService,
        createConnectTransport({ baseUrl: late.baseUrl, httpVersion: "1.1" }),
      );
      await eventually(() => late.revocations.isRevoked(sid), {
        what: "late gateway learned the revocation",
      });
      await assert.rejects(lateCore.getOrder({ orderId: "o" }, bearer(token)), isCode(Code.Unauthenticated));
    } finally {
      await late.close();
    }
  });

  test("an entry past access_tokens_expire_at is dropped", async () => {
    const sid = `sess-${uuidv7()}`;
    await publishRevoked(sid, 60_000);
    await eventually(() => gateway.revocations.isRevoked(sid), { what: "revocation seen" });
    gateway.revocations.add("sess-old", Date.now() + 20);
    await eventually(() => !gateway.revocations.isRevoked("sess-old"), { what: "old entry expired" });
    const size = gateway.revocations.size;
    gateway.revocations.sweep();
    assert.ok(gateway.revocations.size < size);
  });
});

describe("keys from auth's GetJwks (no JWKS_URL)", () => {
  let issuer: TestIssuer;
  let backend: StubBackend;
  let gateway: Awaited<ReturnType<typeof startTestGateway>>;

  before(async () => {
    issuer = await createTestIssuer();
    backend = await startStubBackend("auth-stub", issuer, {
      hooks: { GetJwks: () => create(GetJwksResponseSchema, { keys: issuer.jwks().keys as never }) },
    });
    gateway = await startTestGateway(issuer, everywhere(backend.url), { JWKS_URL: "", JWKS_COOLDOWN: "0" });
  });
  after(async () => {
    await gateway?.close();
    await backend?.close();
    await issuer?.close();
  });

  test("tokens verify against auth's keys, and a rotated key is fetched on its first use", async () => {
    const core = createClient(
      CoreService,
      createConnectTransport({ baseUrl: gateway.baseUrl, httpVersion: "2" }),
    );
    await core.getOrder(
      { orderId: "o" },
      { headers: { authorization: `Bearer ${await issuer.sign({ perms: allPermissions })}` } },
    );
    await issuer.rotate();
    await core.getOrder(
      { orderId: "o" },
      { headers: { authorization: `Bearer ${await issuer.sign({ perms: allPermissions })}` } },
    );
    const forged = await (await createTestIssuer({ issuer: issuer.issuer })).sign();
    await assert.rejects(
      core.getOrder({ orderId: "o" }, { headers: { authorization: `Bearer ${forged}` } }),
      isCode(Code.Unauthenticated),
    );
  });
});
