import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Client } from "@connectrpc/connect";
import { type CallOptions, Code, ConnectError } from "@connectrpc/connect";
import type { AuthService } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { type AuthHarness, bearer, password, signUp, startAuth } from "./support/harness.ts";

const tables = [
  "tenants",
  "users",
  "memberships",
  "member_roles",
  "custom_roles",
  "sessions",
  "refresh_tokens",
  "recovery_codes",
  "invites",
  "login_throttle",
  "signing_keys",
  "outbox",
];

const uuid = "01890a5d-ac96-774b-bcce-b302099a8057";
const long = (n: number) => "x".repeat(n);

type Call = (c: Client<typeof AuthService>, user: CallOptions, service: CallOptions) => Promise<unknown>;

// Every RPC whose request has fields, with inputs its contract rules out. Logout, ListSessions,
// EnrollTotp, GetJwks and ListRoles take empty requests: there is nothing to get wrong.
const cases: Array<[string, Call]> = [
  ["SignUp: bad email", (c) => c.signUp({ email: "not-an-email", password, tenantName: "T" })],
  ["SignUp: short password", (c) => c.signUp({ email: "a@example.com", password: "short", tenantName: "T" })],
  ["SignUp: empty tenant name", (c) => c.signUp({ email: "b@example.com", password, tenantName: "" })],
  ["SignUp: long tenant name", (c) => c.signUp({ email: "c@example.com", password, tenantName: long(101) })],
  ["Login: bad email", (c) => c.login({ email: "nope", password })],
  ["Login: empty password", (c) => c.login({ email: "a@example.com", password: "" })],
  ["Login: long password", (c) => c.login({ email: "a@example.com", password: long(257) })],
  ["Login: tenant id not a UUID", (c) => c.login({ email: "a@example.com", password, tenantId: "tenant-1" })],
  [
    "Login: 5-digit TOTP code",
    (c) => c.login({ email: "a@example.com", password, secondFactor: { case: "totpCode", value: "12345" } }),
  ],
  [
    "Login: recovery code with bad characters",
    (c) =>
      c.login({
        email: "a@example.com",
        password,
        secondFactor: { case: "recoveryCode", value: "abc$%^&*()" },
      }),
  ],
  ["Refresh: empty token", (c) => c.refresh({ refreshToken: "" })],
  ["Refresh: long token", (c) => c.refresh({ refreshToken: long(513) })],
  ["RevokeSession: id not a UUID", (c, u) => c.revokeSession({ sessionId: "session-1" }, u)],
  ["ConfirmTotp: letters", (c, u) => c.confirmTotp({ code: "abcdef" }, u)],
  ["DisableTotp: no proof", (c, u) => c.disableTotp({}, u)],
  ["DisableTotp: 7-digit code", (c, u) => c.disableTotp({ proof: { case: "code", value: "1234567" } }, u)],
  [
    "CreateRole: bad name",
    (c, u) => c.createRole({ name: "Bad Name", permissions: ["core.orders.read"] }, u),
  ],
  ["CreateRole: no permissions", (c, u) => c.createRole({ name: "empty_role", permissions: [] }, u)],
  [
    "CreateRole: repeated permission",
    (c, u) => c.createRole({ name: "dup_role", permissions: ["core.orders.read", "core.orders.read"] }, u),
  ],
  [
    "CreateRole: malformed permission",
    (c, u) => c.createRole({ name: "odd_role", permissions: ["Core..read"] }, u),
  ],
  ["AssignRole: user id not a UUID", (c, u) => c.assignRole({ userId: "u1", role: "viewer" }, u)],
  ["AssignRole: bad role", (c, u) => c.assignRole({ userId: uuid, role: "Viewer!" }, u)],
  ["RevokeRole: user id not a UUID", (c, u) => c.revokeRole({ userId: "u1", role: "viewer" }, u)],
  ["RevokeRole: bad role", (c, u) => c.revokeRole({ userId: uuid, role: "x" }, u)],
  ["ListMembers: page size over 500", (c, u) => c.listMembers({ page: { pageSize: 501 } }, u)],
  ["ListMembers: negative page size", (c, u) => c.listMembers({ page: { pageSize: -1 } }, u)],
  ["ListMembers: long page token", (c, u) => c.listMembers({ page: { pageToken: long(513) } }, u)],
  ["InviteMember: bad email", (c, u) => c.inviteMember({ email: "x", roles: ["viewer"] }, u)],
  ["InviteMember: no roles", (c, u) => c.inviteMember({ email: "i@example.com", roles: [] }, u)],
  [
    "InviteMember: eleven roles",
    (c, u) =>
      c.inviteMember({ email: "i@example.com", roles: Array.from({ length: 11 }, (_, i) => `role_${i}`) }, u),
  ],
  [
    "InviteMember: repeated role",
    (c, u) => c.inviteMember({ email: "i@example.com", roles: ["viewer", "viewer"] }, u),
  ],
  ["AcceptInvite: empty token", (c) => c.acceptInvite({ inviteToken: "", password })],
  ["AcceptInvite: empty password", (c) => c.acceptInvite({ inviteToken: "t", password: "" })],
  [
    "AcceptInvite: bad TOTP code",
    (c) => c.acceptInvite({ inviteToken: "t", password, secondFactor: { case: "totpCode", value: "x" } }),
  ],
  [
    "CheckPermission: user id not a UUID",
    (c, _u, s) => c.checkPermission({ userId: "u", tenantId: uuid, permission: "core.orders.read" }, s),
  ],
  [
    "CheckPermission: tenant id not a UUID",
    (c, _u, s) => c.checkPermission({ userId: uuid, tenantId: "t", permission: "core.orders.read" }, s),
  ],
  [
    "CheckPermission: malformed permission",
    (c, _u, s) => c.checkPermission({ userId: uuid, tenantId: uuid, permission: "orders" }, s),
  ],
];

describe("bad input", () => {
  let h: AuthHarness;
  let user: CallOptions;
  const service: CallOptions = {
    headers: { "x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/trellis/sa/billing" },
  };
  // A digest of every table's content: equal digests mean nothing was written. The outbox's
  // sent_at is left out: the relay sets it whenever it publishes earlier events (SignUp's).
  const digest = async () => {
    const out: Record<string, string> = {};
    for (const table of tables) {
      const rows =
        table === "outbox"
          ? "(select seq, id, subject, type, payload, headers, created_at from outbox)"
          : table;
      const [row] = await h.sql.unsafe(
        `select count(*)::text || ':' || coalesce(md5(string_agg(t::text, ',' order by t::text)), '') as d from ${rows} t`,
      );
      out[table] = String(row?.d);
    }
    return out;
  };

  before(async () => {
    h = await startAuth();
    const owner = await signUp(h);
    user = bearer(owner.tokens.accessToken);
  });
  after(() => h.close());

  for (const [name, call] of cases) {
    test(`${name} → invalid_argument, nothing written`, async () => {
      const before = await digest();
      let error: ConnectError | undefined;
      try {
        await call(h.client, user, service);
      } catch (e) {
        error = ConnectError.from(e);
      }
      assert.equal(error?.code, Code.InvalidArgument);
      assert.ok(error.details.length > 0, "the violations travel as a detail");
      assert.deepEqual(await digest(), before);
    });
  }
});
