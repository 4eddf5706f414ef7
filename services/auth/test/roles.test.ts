import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { MfaChallengeReason } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import {
  InviteCreatedSchema,
  MemberJoinedSchema,
  MemberRoleChangedSchema,
  RoleChange,
  RoleCreatedSchema,
  UserCreatedSchema,
} from "@trellis/gen/trellis/auth/v1/events_pb.js";
import {
  type AuthHarness,
  bearer,
  codeAt,
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

/** Headers of a call from another service, as Istio's sidecar forwards its identity. */
function fromService(name: string) {
  return {
    headers: {
      "x-forwarded-client-cert": `By=spiffe://cluster.local/ns/trellis/sa/auth;URI=spiffe://cluster.local/ns/trellis/sa/${name}`,
    },
  };
}

describe("roles, members and invites", () => {
  let h: AuthHarness;
  before(async () => {
    h = await startAuth();
  });
  after(() => h.close());

  /** A tenant with an owner and a member who joined by invite with the given roles. */
  async function tenantWithMember(roles: string[] = ["member"]) {
    const owner = await signUp(h);
    const email = newEmail("member");
    const invited = await h.client.inviteMember({ email, roles }, bearer(owner.tokens.accessToken));
    const joined = await h.client.acceptInvite({ inviteToken: invited.inviteToken, password });
    if (joined.result.case !== "tokens") throw new Error("expected tokens");
    return { owner, member: { email, userId: joined.userId, tokens: joined.result.value } };
  }

  test("ListRoles answers the built-in roles first, each with its permissions", async () => {
    const { tokens } = await signUp(h);
    const res = await h.client.listRoles({}, bearer(tokens.accessToken));
    assert.deepEqual(
      res.roles.slice(0, 5).map((r) => [r.name, r.builtIn]),
      [
        ["owner", true],
        ["admin", true],
        ["member", true],
        ["billing_admin", true],
        ["viewer", true],
      ],
    );
    const viewer = res.roles.find((r) => r.name === "viewer");
    assert.ok(viewer?.permissions.includes("billing.invoices.read"));
    assert.ok(!viewer?.permissions.includes("core.orders.write"));
  });

  test("CreateRole adds a custom role (RoleCreated); duplicate and built-in names are already_exists", async () => {
    const { tokens, tenantId, userId } = await signUp(h);
    const auth = bearer(tokens.accessToken);
    const res = await h.client.createRole(
      { name: "support", permissions: ["core.orders.read", "auth.members.read"] },
      auth,
    );
    assert.deepEqual(res.role?.permissions, ["auth.members.read", "core.orders.read"]);
    assert.equal(res.role?.builtIn, false);
    const event = await h.waitForEvent(RoleCreatedSchema, (e) => e.tenantId === tenantId);
    assert.equal(event.role, "support");
    assert.equal(event.createdByUserId, userId);
    assert.equal(
      await codeOf(h.client.createRole({ name: "support", permissions: ["core.orders.read"] }, auth)),
      Code.AlreadyExists,
    );
    assert.equal(
      await codeOf(h.client.createRole({ name: "admin", permissions: ["core.orders.read"] }, auth)),
      Code.AlreadyExists,
    );
    assert.equal(
      await codeOf(h.client.createRole({ name: "typo", permissions: ["core.order.read"] }, auth)),
      Code.InvalidArgument,
    );
    const roles = await h.client.listRoles({}, auth);
    assert.equal(roles.roles.at(-1)?.name, "support");
  });

  test("a member without auth.roles.manage gets permission_denied", async () => {
    const { member } = await tenantWithMember(["member"]);
    const auth = bearer(member.tokens.accessToken);
    assert.equal(
      await codeOf(h.client.createRole({ name: "x_role", permissions: ["core.orders.read"] }, auth)),
      Code.PermissionDenied,
    );
    assert.equal(
      await codeOf(h.client.assignRole({ userId: member.userId, role: "admin" }, auth)),
      Code.PermissionDenied,
    );
    assert.equal(
      await codeOf(h.client.inviteMember({ email: newEmail(), roles: ["viewer"] }, auth)),
      Code.PermissionDenied,
    );
  });

  test("AssignRole and RevokeRole change a member's roles, publish MemberRoleChanged, and no-ops publish nothing", async () => {
    const { owner, member } = await tenantWithMember(["viewer"]);
    const auth = bearer(owner.tokens.accessToken);
    const assigned = await h.client.assignRole({ userId: member.userId, role: "billing_admin" }, auth);
    assert.deepEqual(assigned.member?.roles, ["billing_admin", "viewer"]);
    const event = await h.waitForEvent(
      MemberRoleChangedSchema,
      (e) => e.userId === member.userId && e.role === "billing_admin",
    );
    assert.equal(event.change, RoleChange.ASSIGNED);
    assert.deepEqual(event.roles, ["billing_admin", "viewer"]);
    assert.equal(event.changedByUserId, owner.userId);

    await h.client.assignRole({ userId: member.userId, role: "billing_admin" }, auth);
    const revoked = await h.client.revokeRole({ userId: member.userId, role: "viewer" }, auth);
    assert.deepEqual(revoked.member?.roles, ["billing_admin"]);
    await h.client.revokeRole({ userId: member.userId, role: "viewer" }, auth);
    const revokedEvent = await h.waitForEvent(
      MemberRoleChangedSchema,
      (e) => e.userId === member.userId && e.change === RoleChange.REVOKED,
    );
    assert.deepEqual(revokedEvent.roles, ["billing_admin"]);
    const changes = (await h.events()).filter((e) => e.type === MemberRoleChangedSchema.typeName);
    const forMember = changes.filter((e) => Buffer.from(e.data).includes(Buffer.from(member.userId)));
    assert.equal(forMember.length, 2);

    // The member's next tokens carry the new roles.
    const refreshed = await h.client.refresh({ refreshToken: member.tokens.refreshToken });
    assert.deepEqual(decodeJwt(refreshed.tokens?.accessToken ?? "").claims.roles, ["billing_admin"]);
    assert.equal(
      await codeOf(h.client.assignRole({ userId: member.userId, role: "no_such_role" }, auth)),
      Code.NotFound,
    );
  });

  test("only an owner may grant or take the owner role; the last owner cannot be removed", async () => {
    const { owner, member } = await tenantWithMember(["admin"]);
    const admin = bearer(member.tokens.accessToken);
    assert.equal(
      await codeOf(h.client.assignRole({ userId: member.userId, role: "owner" }, admin)),
      Code.PermissionDenied,
    );
    assert.equal(
      await codeOf(h.client.revokeRole({ userId: owner.userId, role: "owner" }, admin)),
      Code.PermissionDenied,
    );
    assert.equal(
      await codeOf(h.client.inviteMember({ email: newEmail(), roles: ["owner"] }, admin)),
      Code.PermissionDenied,
    );
    const ownerAuth = bearer(owner.tokens.accessToken);
    assert.equal(
      await codeOf(h.client.revokeRole({ userId: owner.userId, role: "owner" }, ownerAuth)),
      Code.FailedPrecondition,
    );
    await h.client.assignRole({ userId: member.userId, role: "owner" }, ownerAuth);
    const res = await h.client.revokeRole({ userId: owner.userId, role: "owner" }, ownerAuth);
    assert.deepEqual(res.member?.roles, []);
  });

  test("a demoted admin loses role management at once, before their token expires", async () => {
    const { owner, member } = await tenantWithMember(["admin"]);
    await h.client.revokeRole({ userId: member.userId, role: "admin" }, bearer(owner.tokens.accessToken));
    const stale = bearer(member.tokens.accessToken);
    assert.equal(
      await codeOf(h.client.assignRole({ userId: member.userId, role: "admin" }, stale)),
      Code.PermissionDenied,
    );
  });

  test("InviteMember + AcceptInvite creates the account in the tenant (InviteCreated, UserCreated, MemberJoined)", async () => {
    const owner = await signUp(h);
    const email = newEmail("invitee");
    const invited = await h.client.inviteMember(
      { email, roles: ["viewer", "billing_admin"] },
      bearer(owner.tokens.accessToken),
    );
    assert.ok(invited.inviteToken.length >= 32);
    assert.equal(invited.invite?.email, email);
    const created = await h.waitForEvent(InviteCreatedSchema, (e) => e.inviteId === invited.invite?.id);
    assert.equal(created.tenantId, owner.tenantId);
    const raw = (await h.events()).find((e) => e.type === InviteCreatedSchema.typeName);
    assert.ok(
      raw && !Buffer.from(raw.data).includes(Buffer.from(invited.inviteToken)),
      "no token in the event",
    );

    assert.equal(
      await codeOf(h.client.acceptInvite({ inviteToken: invited.inviteToken, password: "short" })),
      Code.InvalidArgument,
    );
    const joined = await h.client.acceptInvite({ inviteToken: invited.inviteToken, password });
    assert.equal(joined.result.case, "tokens");
    assert.equal(joined.tenantId, owner.tenantId);
    if (joined.result.case !== "tokens") return;
    assert.deepEqual(decodeJwt(joined.result.value.accessToken).claims.roles, ["billing_admin", "viewer"]);
    await h.waitForEvent(UserCreatedSchema, (e) => e.userId === joined.userId);
    const member = await h.waitForEvent(MemberJoinedSchema, (e) => e.userId === joined.userId);
    assert.equal(member.inviteId, invited.invite?.id);

    // Single use.
    assert.equal(
      await codeOf(h.client.acceptInvite({ inviteToken: invited.inviteToken, password })),
      Code.NotFound,
    );
    assert.equal(
      await codeOf(h.client.acceptInvite({ inviteToken: "no-such-invite", password })),
      Code.NotFound,
    );
    assert.equal(
      await codeOf(h.client.inviteMember({ email, roles: ["viewer"] }, bearer(owner.tokens.accessToken))),
      Code.AlreadyExists,
    );
  });

  test("an expired invite is not_found", async () => {
    const owner = await signUp(h);
    const invited = await h.client.inviteMember(
      { email: newEmail(), roles: ["viewer"] },
      bearer(owner.tokens.accessToken),
    );
    await h.sql`update invites set expires_at = now() - interval '1 second' where id = ${invited.invite?.id ?? ""}`;
    assert.equal(
      await codeOf(h.client.acceptInvite({ inviteToken: invited.inviteToken, password })),
      Code.NotFound,
    );
  });

  test("an existing account accepts with its own password, and its MFA applies", async () => {
    const home = await signUp(h);
    const auth = bearer(home.tokens.accessToken);
    const { secret } = await h.client.enrollTotp({}, auth);
    await h.client.confirmTotp({ code: codeAt(h, secret) }, auth);
    h.clock.advance(30_000);
    const other = await signUp(h);
    const invited = await h.client.inviteMember(
      { email: home.email, roles: ["member"] },
      bearer(other.tokens.accessToken),
    );

    assert.equal(
      await codeOf(h.client.acceptInvite({ inviteToken: invited.inviteToken, password: "wrong password!" })),
      Code.Unauthenticated,
    );
    const challenge = await h.client.acceptInvite({ inviteToken: invited.inviteToken, password });
    assert.equal(challenge.result.case, "mfaRequired");
    assert.equal(challenge.result.value?.reason, MfaChallengeReason.CODE_REQUIRED);
    const joined = await h.client.acceptInvite({
      inviteToken: invited.inviteToken,
      password,
      secondFactor: { case: "totpCode", value: codeAt(h, secret) },
    });
    assert.equal(joined.result.case, "tokens");
    assert.equal(joined.userId, home.userId);
    assert.equal(joined.tenantId, other.tenantId);
    // The account now belongs to both tenants; Login picks the first unless told otherwise.
    h.clock.advance(30_000);
    const login = await h.client.login({
      email: home.email,
      password,
      tenantId: other.tenantId,
      secondFactor: { case: "totpCode", value: codeAt(h, secret) },
    });
    assert.equal(login.result.case, "tokens");
    if (login.result.case === "tokens")
      assert.equal(decodeJwt(login.result.value.accessToken).claims.tid, other.tenantId);
  });

  test("ListMembers pages oldest first", async () => {
    const owner = await signUp(h);
    const auth = bearer(owner.tokens.accessToken);
    const emails = [newEmail("a"), newEmail("b"), newEmail("c")];
    for (const email of emails) {
      const invited = await h.client.inviteMember({ email, roles: ["viewer"] }, auth);
      await h.client.acceptInvite({ inviteToken: invited.inviteToken, password });
    }
    const seen: string[] = [];
    let pageToken = "";
    for (let i = 0; i < 5; i++) {
      const page = await h.client.listMembers({ page: { pageSize: 2, pageToken } }, auth);
      seen.push(...page.members.map((m) => m.email));
      pageToken = page.page?.nextPageToken ?? "";
      if (!pageToken) break;
    }
    assert.deepEqual(seen, [owner.email, ...emails]);
    assert.equal(
      await codeOf(h.client.listMembers({ page: { pageSize: 2, pageToken: "garbage" } }, auth)),
      Code.InvalidArgument,
    );
  });

  test("CheckPermission answers live for the listed services only", async () => {
    const { owner, member } = await tenantWithMember(["viewer"]);
    const ask = (permission: string, userId = member.userId) =>
      h.client.checkPermission({ userId, tenantId: owner.tenantId, permission }, fromService("billing"));
    assert.equal((await ask("billing.invoices.read")).allowed, true);
    assert.equal((await ask("core.orders.write")).allowed, false);
    await h.client.assignRole({ userId: member.userId, role: "member" }, bearer(owner.tokens.accessToken));
    assert.equal((await ask("core.orders.write")).allowed, true);
    const stranger = await signUp(h);
    assert.equal((await ask("billing.invoices.read", stranger.userId)).allowed, false);

    const req = { userId: member.userId, tenantId: owner.tenantId, permission: "billing.invoices.read" };
    assert.equal(await codeOf(h.client.checkPermission(req, fromService("gateway"))), Code.PermissionDenied);
    assert.equal(
      await codeOf(h.client.checkPermission(req, bearer(owner.tokens.accessToken))),
      Code.PermissionDenied,
    );
    assert.equal(await codeOf(h.client.checkPermission(req)), Code.Unauthenticated);
  });
});
