import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type AuthHarness,
  bearer,
  decodeJwt,
  newEmail,
  password,
  signUp,
  startAuth,
} from "./support/harness.ts";

async function codeOf(promise: Promise<unknown>): Promise<Code | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

describe("tenant isolation", () => {
  let h: AuthHarness;
  before(async () => {
    h = await startAuth();
  });
  after(() => h.close());

  test("ids from another tenant are not found, and nothing of that tenant changes", async () => {
    const a = await signUp(h);
    const b = await signUp(h);
    const aAuth = bearer(a.tokens.accessToken);
    await h.client.createRole(
      { name: "secret_role", permissions: ["core.orders.read"] },
      bearer(b.tokens.accessToken),
    );
    const snapshot = async () =>
      h.sql`select (select count(*) from sessions where tenant_id = ${b.tenantId} and revoked_at is null)::int as live,
                   (select string_agg(user_id::text || role, ',' order by role) from member_roles
                    where tenant_id = ${b.tenantId}) as roles`;
    const before = await snapshot();

    assert.equal(
      await codeOf(h.client.revokeSession({ sessionId: b.tokens.sessionId }, aAuth)),
      Code.NotFound,
    );
    assert.equal(
      await codeOf(h.client.assignRole({ userId: b.userId, role: "viewer" }, aAuth)),
      Code.NotFound,
    );
    assert.equal(
      await codeOf(h.client.revokeRole({ userId: b.userId, role: "owner" }, aAuth)),
      Code.NotFound,
    );
    // A custom role of tenant B does not exist in tenant A.
    const invite = h.client.inviteMember({ email: newEmail(), roles: ["secret_role"] }, aAuth);
    assert.equal(await codeOf(invite), Code.NotFound);

    assert.deepEqual(await snapshot(), before);
    await h.client.refresh({ refreshToken: b.tokens.refreshToken });

    const members = await h.client.listMembers({}, aAuth);
    assert.deepEqual(
      members.members.map((m) => m.userId),
      [a.userId],
    );
    const roles = await h.client.listRoles({}, aAuth);
    assert.ok(!roles.roles.some((r) => r.name === "secret_role"));
  });

  test("a user in two tenants acts only in the token's tenant", async () => {
    const a = await signUp(h);
    const b = await signUp(h);
    // b's owner joins tenant A as an admin.
    const invited = await h.client.inviteMember(
      { email: b.email, roles: ["admin"] },
      bearer(a.tokens.accessToken),
    );
    const joined = await h.client.acceptInvite({ inviteToken: invited.inviteToken, password });
    assert.equal(joined.result.case, "tokens");
    if (joined.result.case !== "tokens") return;
    const inA = bearer(joined.result.value.accessToken);
    assert.equal(decodeJwt(joined.result.value.accessToken).claims.tid, a.tenantId);
    assert.deepEqual(decodeJwt(joined.result.value.accessToken).claims.roles, ["admin"]);

    // Their own session in tenant B is invisible from tenant A.
    assert.equal(await codeOf(h.client.revokeSession({ sessionId: b.tokens.sessionId }, inA)), Code.NotFound);
    const sessions = await h.client.listSessions({}, inA);
    assert.deepEqual(
      sessions.sessions.map((s) => s.id),
      [joined.result.value.sessionId],
    );
    // An admin of A cannot touch B's members, even though the same person owns B.
    const bMember = await h.client.inviteMember(
      { email: newEmail(), roles: ["viewer"] },
      bearer(b.tokens.accessToken),
    );
    const bJoined = await h.client.acceptInvite({ inviteToken: bMember.inviteToken, password });
    assert.equal(
      await codeOf(h.client.assignRole({ userId: bJoined.userId, role: "admin" }, inA)),
      Code.NotFound,
    );
    const listed = await h.client.listMembers({}, inA);
    assert.ok(!listed.members.some((m) => m.userId === bJoined.userId));
  });

  test("CheckPermission for a tenant the user is not in is false", async () => {
    const a = await signUp(h);
    const b = await signUp(h);
    const res = await h.client.checkPermission(
      { userId: a.userId, tenantId: b.tenantId, permission: "auth.roles.manage" },
      { headers: { "x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/trellis/sa/core" } },
    );
    assert.equal(res.allowed, false);
  });
});
