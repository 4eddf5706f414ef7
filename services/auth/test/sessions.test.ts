import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { SessionRevokedSchema, SessionRevokeReason } from "@trellis/gen/trellis/auth/v1/events_pb.js";
import { type AuthHarness, bearer, decodeJwt, password, signUp, startAuth } from "./support/harness.ts";

async function codeOf(promise: Promise<unknown>): Promise<Code | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

describe("sessions and refresh tokens", () => {
  let h: AuthHarness;
  before(async () => {
    h = await startAuth();
  });
  after(() => h.close());

  test("Refresh rotates: a new pair for the same session, and the new refresh token works", async () => {
    const { tokens } = await signUp(h);
    const first = await h.client.refresh({ refreshToken: tokens.refreshToken });
    assert.ok(first.tokens);
    assert.equal(first.tokens.sessionId, tokens.sessionId);
    assert.notEqual(first.tokens.refreshToken, tokens.refreshToken);
    assert.equal(decodeJwt(first.tokens.accessToken).claims.sid, tokens.sessionId);
    const second = await h.client.refresh({ refreshToken: first.tokens.refreshToken });
    assert.equal(second.tokens?.sessionId, tokens.sessionId);
    // The access token of a refresh is accepted by the service.
    await h.client.listSessions({}, bearer(second.tokens?.accessToken ?? ""));
  });

  test("presenting a spent refresh token revokes the whole session and publishes SessionRevoked", async () => {
    const { tokens, userId, tenantId } = await signUp(h);
    const rotated = await h.client.refresh({ refreshToken: tokens.refreshToken });
    assert.ok(rotated.tokens);
    // The thief replays the old token.
    assert.equal(await codeOf(h.client.refresh({ refreshToken: tokens.refreshToken })), Code.Unauthenticated);
    // The legitimate holder's newer token is dead too: the session is gone.
    assert.equal(
      await codeOf(h.client.refresh({ refreshToken: rotated.tokens.refreshToken })),
      Code.Unauthenticated,
    );
    const event = await h.waitForEvent(SessionRevokedSchema, (e) => e.sessionId === tokens.sessionId);
    assert.equal(event.reason, SessionRevokeReason.REFRESH_TOKEN_REUSE);
    assert.equal(event.userId, userId);
    assert.equal(event.tenantId, tenantId);
    assert.ok(event.accessTokensExpireAt);
    const exp = decodeJwt(rotated.tokens.accessToken).claims.exp as number;
    assert.equal(Number(event.accessTokensExpireAt.seconds), exp);
    const [row] = await h.sql`select revoke_reason from sessions where id = ${tokens.sessionId}`;
    assert.equal(row?.revoke_reason, SessionRevokeReason.REFRESH_TOKEN_REUSE);
  });

  test("an unknown refresh token is unauthenticated", async () => {
    assert.equal(await codeOf(h.client.refresh({ refreshToken: "no-such-token" })), Code.Unauthenticated);
  });

  test("Logout revokes the current session (refresh stops working), publishes once, and may be repeated", async () => {
    const { tokens } = await signUp(h);
    await h.client.logout({}, bearer(tokens.accessToken));
    assert.equal(await codeOf(h.client.refresh({ refreshToken: tokens.refreshToken })), Code.Unauthenticated);
    const event = await h.waitForEvent(SessionRevokedSchema, (e) => e.sessionId === tokens.sessionId);
    assert.equal(event.reason, SessionRevokeReason.LOGOUT);
    await h.client.logout({}, bearer(tokens.accessToken));
    const revocations = (await h.events()).filter((e) => e.type === SessionRevokedSchema.typeName);
    const forSession = revocations.filter((e) => Buffer.from(e.data).includes(Buffer.from(tokens.sessionId)));
    assert.equal(forSession.length, 1);
  });

  test("Logout and the other user RPCs need a token", async () => {
    assert.equal(await codeOf(h.client.logout({})), Code.Unauthenticated);
    assert.equal(await codeOf(h.client.listSessions({})), Code.Unauthenticated);
    assert.equal(await codeOf(h.client.listSessions({}, bearer("not.a.jwt"))), Code.Unauthenticated);
  });

  test("ListSessions lists the caller's active sessions newest first; RevokeSession ends one at once", async () => {
    const owner = await signUp(h);
    const second = await h.client.login(
      { email: owner.email, password },
      { headers: { "user-agent": "phone", "x-forwarded-for": "198.51.100.23" } },
    );
    assert.equal(second.result.case, "tokens");
    if (second.result.case !== "tokens") return;
    const phone = second.result.value;
    const listed = await h.client.listSessions({}, bearer(owner.tokens.accessToken));
    assert.deepEqual(
      listed.sessions.map((s) => s.id),
      [phone.sessionId, owner.tokens.sessionId],
    );
    assert.deepEqual(
      listed.sessions.map((s) => s.current),
      [false, true],
    );
    assert.equal(listed.sessions[0]?.userAgent, "phone");
    assert.equal(listed.sessions[0]?.ipAddress, "198.51.100.23");
    assert.ok(listed.sessions[0]?.createdAt && listed.sessions[0].lastUsedAt);

    await h.client.revokeSession({ sessionId: phone.sessionId }, bearer(owner.tokens.accessToken));
    assert.equal(await codeOf(h.client.refresh({ refreshToken: phone.refreshToken })), Code.Unauthenticated);
    const event = await h.waitForEvent(SessionRevokedSchema, (e) => e.sessionId === phone.sessionId);
    assert.equal(event.reason, SessionRevokeReason.REVOKED);
    const after = await h.client.listSessions({}, bearer(owner.tokens.accessToken));
    assert.deepEqual(
      after.sessions.map((s) => s.id),
      [owner.tokens.sessionId],
    );
    // Revoking it again is fine.
    await h.client.revokeSession({ sessionId: phone.sessionId }, bearer(owner.tokens.accessToken));
  });

  test("Refresh updates the session's last use", async () => {
    const { tokens } = await signUp(h);
    const lastUsed = async () => {
      const [row] = await h.sql<
        { t: Date }[]
      >`select last_used_at as t from sessions where id = ${tokens.sessionId}`;
      return row?.t.getTime() ?? Number.NaN;
    };
    const before = await lastUsed();
    await h.client.refresh({ refreshToken: tokens.refreshToken });
    assert.ok((await lastUsed()) >= before);
    const stored =
      await h.sql`select count(*)::int as n from refresh_tokens where session_id = ${tokens.sessionId}`;
    assert.equal(stored[0]?.n, 2);
    const plain =
      await h.sql`select 1 from refresh_tokens where token_hash = ${Buffer.from(tokens.refreshToken)}`;
    assert.equal(plain.length, 0, "refresh tokens are stored hashed");
  });
});
