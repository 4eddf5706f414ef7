import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  TenantCreatedSchema,
  UserCreatedSchema,
  UserLoggedInSchema,
} from "@trellis/gen/trellis/auth/v1/events_pb.js";
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

describe("sign-up and login", () => {
  let h: AuthHarness;
  before(async () => {
    h = await startAuth({
      LOGIN_MAX_FAILURES: "3",
      LOGIN_MAX_FAILURES_PER_ADDRESS: "5",
      LOGIN_LOCKOUT: "10m",
    });
  });
  after(() => h.close());

  test("SignUp creates a tenant and its owner, signs in, and publishes TenantCreated, UserCreated, UserLoggedIn", async () => {
    const email = newEmail("Mixed.Case");
    const res = await h.client.signUp(
      { email, password, tenantName: "Acme" },
      { headers: { "user-agent": "signup-test/1.0", "x-forwarded-for": "203.0.113.7" } },
    );
    assert.ok(res.tokens?.accessToken);
    assert.equal(res.tokens.tokenType, "Bearer");
    const { header, claims } = decodeJwt(res.tokens.accessToken);
    assert.equal(claims.sub, res.userId);
    assert.equal(claims.tid, res.tenantId);
    assert.equal(claims.sid, res.tokens.sessionId);
    assert.deepEqual(claims.roles, ["owner"]);
    assert.ok((claims.perms as string[]).includes("auth.roles.manage"));
    assert.equal(typeof header.kid, "string");

    const tenant = await h.waitForEvent(TenantCreatedSchema, (e) => e.tenantId === res.tenantId);
    assert.equal(tenant.name, "Acme");
    assert.equal(tenant.ownerUserId, res.userId);
    const user = await h.waitForEvent(UserCreatedSchema, (e) => e.userId === res.userId);
    assert.equal(user.email, email.toLowerCase());
    const login = await h.waitForEvent(UserLoggedInSchema, (e) => e.sessionId === res.tokens?.sessionId);
    assert.equal(login.mfaUsed, false);
    const arrived = (await h.events()).find((e) => e.type === TenantCreatedSchema.typeName);
    assert.equal(arrived?.subject, `${h.subjectPrefix}.tenant.created`);
    assert.ok(arrived?.headers["ce-id"]);

    const sessions = await h.client.listSessions({}, bearer(res.tokens.accessToken));
    assert.equal(sessions.sessions.length, 1);
    assert.equal(sessions.sessions[0]?.userAgent, "signup-test/1.0");
    assert.equal(sessions.sessions[0]?.ipAddress, "203.0.113.7");
    assert.equal(sessions.sessions[0]?.current, true);
  });

  test("a second SignUp with the same email (any case) gets already_exists and writes nothing", async () => {
    const { email } = await signUp(h);
    const [before] =
      await h.sql`select (select count(*) from tenants)::int as t, (select count(*) from users)::int as u`;
    const code = await codeOf(h.client.signUp({ email: email.toUpperCase(), password, tenantName: "Dup" }));
    assert.equal(code, Code.AlreadyExists);
    const [after] =
      await h.sql`select (select count(*) from tenants)::int as t, (select count(*) from users)::int as u`;
    assert.deepEqual(after, before);
  });

  test("Login answers tokens for the right password; unknown email and wrong password get the same unauthenticated", async () => {
    const { email, userId, tenantId } = await signUp(h);
    const ok = await h.client.login({ email, password });
    assert.equal(ok.result.case, "tokens");
    if (ok.result.case !== "tokens") return;
    assert.equal(decodeJwt(ok.result.value.accessToken).claims.sub, userId);
    assert.equal(decodeJwt(ok.result.value.accessToken).claims.tid, tenantId);
    const { sessionId } = ok.result.value;
    await h.waitForEvent(UserLoggedInSchema, (e) => e.sessionId === sessionId);

    const wrong = await codeOf(h.client.login({ email, password: "not the password" }));
    const unknown = await codeOf(h.client.login({ email: newEmail("nobody"), password }));
    assert.equal(wrong, Code.Unauthenticated);
    assert.equal(unknown, Code.Unauthenticated);
  });

  test("Login into a tenant the user is not in gets the wrong-password answer", async () => {
    const a = await signUp(h);
    const b = await signUp(h);
    assert.equal(
      await codeOf(h.client.login({ email: a.email, password, tenantId: b.tenantId })),
      Code.Unauthenticated,
    );
    const own = await h.client.login({ email: a.email, password, tenantId: a.tenantId });
    assert.equal(own.result.case, "tokens");
  });

  test("repeated failures lock the account (resource_exhausted, even with the right password)", async () => {
    const { email } = await signUp(h);
    // Different addresses, so only the account counter can be what locks.
    for (let i = 0; i < 3; i++) {
      const code = await codeOf(
        h.client.login(
          { email, password: "wrong password" },
          { headers: { "x-forwarded-for": `198.51.100.${i + 1}` } },
        ),
      );
      assert.equal(code, Code.Unauthenticated);
    }
    let error: ConnectError | undefined;
    try {
      await h.client.login({ email, password }, { headers: { "x-forwarded-for": "198.51.100.99" } });
    } catch (e) {
      error = ConnectError.from(e);
    }
    assert.equal(error?.code, Code.ResourceExhausted);
    assert.ok(Number(error?.metadata.get("retry-after")) > 0);
  });

  test("repeated failures from one address lock that address for every account", async () => {
    const victim = await signUp(h);
    const address = { headers: { "x-forwarded-for": "192.0.2.44" } };
    for (let i = 0; i < 5; i++) {
      assert.equal(
        await codeOf(h.client.login({ email: newEmail("guess"), password }, address)),
        Code.Unauthenticated,
      );
    }
    assert.equal(
      await codeOf(h.client.login({ email: victim.email, password }, address)),
      Code.ResourceExhausted,
    );
    // The same account from elsewhere is fine.
    const elsewhere = await h.client.login(
      { email: victim.email, password },
      { headers: { "x-forwarded-for": "192.0.2.45" } },
    );
    assert.equal(elsewhere.result.case, "tokens");
  });

  test("a success clears the account's failure count", async () => {
    const { email } = await signUp(h);
    const from = (n: number) => ({ headers: { "x-forwarded-for": `100.64.0.${n}` } });
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 2; i++)
        await codeOf(h.client.login({ email, password: "wrong password" }, from(round * 10 + i)));
      const ok = await h.client.login({ email, password }, from(round * 10 + 5));
      assert.equal(ok.result.case, "tokens");
    }
  });

  test("the client address is the gateway's (rightmost) x-forwarded-for entry", async () => {
    const { email } = await signUp(h);
    const res = await h.client.login(
      { email, password },
      { headers: { "x-forwarded-for": "6.6.6.6, 203.0.113.9", "user-agent": "ua-test" } },
    );
    assert.equal(res.result.case, "tokens");
    if (res.result.case !== "tokens") return;
    const sessions = await h.client.listSessions({}, bearer(res.result.value.accessToken));
    const current = sessions.sessions.find((s) => s.current);
    assert.equal(current?.ipAddress, "203.0.113.9");
    assert.equal(current?.userAgent, "ua-test");
  });
});
