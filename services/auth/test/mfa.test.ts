import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { MfaChallengeReason } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import {
  MfaDisabledSchema,
  MfaEnabledSchema,
  UserLoggedInSchema,
} from "@trellis/gen/trellis/auth/v1/events_pb.js";
import { type AuthHarness, bearer, codeAt, password, signUp, startAuth } from "./support/harness.ts";

async function codeOf(promise: Promise<unknown>): Promise<Code | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

// A code that is not the secret's code at any step near now.
function wrongCode(h: AuthHarness, secret: string): string {
  const near = new Set([-1, 0, 1].map((s) => codeAt(h, secret, s)));
  for (let n = 0; ; n++) {
    const candidate = String(n).padStart(6, "0");
    if (!near.has(candidate)) return candidate;
  }
}

/** Signs up and turns MFA on; answers the secret and recovery codes. */
async function withMfa(h: AuthHarness) {
  const account = await signUp(h);
  const auth = bearer(account.tokens.accessToken);
  const enrolled = await h.client.enrollTotp({}, auth);
  const confirmed = await h.client.confirmTotp({ code: codeAt(h, enrolled.secret) }, auth);
  // Each later step's code is new, so the next sign-in never looks like a replay.
  h.clock.advance(30_000);
  return { ...account, auth, secret: enrolled.secret, recoveryCodes: confirmed.recoveryCodes };
}

describe("TOTP MFA", () => {
  let h: AuthHarness;
  before(async () => {
    h = await startAuth({ LOGIN_MAX_FAILURES: "50" });
  });
  after(() => h.close());

  test("EnrollTotp answers a base32 secret and an otpauth URI; ConfirmTotp with a right code turns MFA on", async () => {
    const { tokens, email, userId } = await signUp(h);
    const auth = bearer(tokens.accessToken);
    const enrolled = await h.client.enrollTotp({}, auth);
    assert.match(enrolled.secret, /^[A-Z2-7]{32}$/);
    const uri = new URL(enrolled.otpauthUri);
    assert.equal(uri.protocol, "otpauth:");
    assert.equal(uri.searchParams.get("secret"), enrolled.secret);
    assert.equal(uri.searchParams.get("algorithm"), "SHA1");
    assert.equal(uri.searchParams.get("digits"), "6");
    assert.equal(uri.searchParams.get("period"), "30");
    assert.ok(decodeURIComponent(uri.pathname).endsWith(email));

    assert.equal(
      await codeOf(h.client.confirmTotp({ code: wrongCode(h, enrolled.secret) }, auth)),
      Code.PermissionDenied,
    );
    const confirmed = await h.client.confirmTotp({ code: codeAt(h, enrolled.secret) }, auth);
    assert.equal(confirmed.recoveryCodes.length, 10);
    assert.equal(new Set(confirmed.recoveryCodes).size, 10);
    await h.waitForEvent(MfaEnabledSchema, (e) => e.userId === userId);

    assert.equal(await codeOf(h.client.enrollTotp({}, auth)), Code.FailedPrecondition);
    assert.equal(
      await codeOf(h.client.confirmTotp({ code: codeAt(h, enrolled.secret) }, auth)),
      Code.FailedPrecondition,
    );
    const [row] = await h.sql`select count(*)::int as n from recovery_codes where user_id = ${userId}
      and code_hash = ${Buffer.from(confirmed.recoveryCodes[0] ?? "")}`;
    assert.equal(row?.n, 0, "recovery codes are stored hashed");
  });

  test("ConfirmTotp without an enrollment is failed_precondition", async () => {
    const { tokens } = await signUp(h);
    assert.equal(
      await codeOf(h.client.confirmTotp({ code: "123456" }, bearer(tokens.accessToken))),
      Code.FailedPrecondition,
    );
  });

  test("with MFA on, Login without a code or with a wrong one answers mfa_required and never tokens", async () => {
    const { email, secret } = await withMfa(h);
    const none = await h.client.login({ email, password });
    assert.equal(none.result.case, "mfaRequired");
    assert.equal(none.result.value?.reason, MfaChallengeReason.CODE_REQUIRED);
    const wrong = await h.client.login({
      email,
      password,
      secondFactor: { case: "totpCode", value: wrongCode(h, secret) },
    });
    assert.equal(wrong.result.case, "mfaRequired");
    assert.equal(wrong.result.value?.reason, MfaChallengeReason.CODE_INVALID);
    // A wrong password is still just a wrong password.
    assert.equal(await codeOf(h.client.login({ email, password: "wrong password" })), Code.Unauthenticated);
  });

  test("Login with the current TOTP code signs in, and the same code cannot be replayed", async () => {
    const { email, secret, userId } = await withMfa(h);
    const code = codeAt(h, secret);
    const res = await h.client.login({ email, password, secondFactor: { case: "totpCode", value: code } });
    assert.equal(res.result.case, "tokens");
    if (res.result.case !== "tokens") return;
    const { sessionId } = res.result.value;
    const event = await h.waitForEvent(UserLoggedInSchema, (e) => e.sessionId === sessionId);
    assert.equal(event.mfaUsed, true);
    assert.equal(event.userId, userId);
    const replay = await h.client.login({ email, password, secondFactor: { case: "totpCode", value: code } });
    assert.equal(replay.result.case, "mfaRequired");
    assert.equal(replay.result.value?.reason, MfaChallengeReason.CODE_INVALID);
  });

  test("a recovery code signs in exactly once (any case, with or without the hyphen)", async () => {
    const { email, recoveryCodes } = await withMfa(h);
    const code = recoveryCodes[3] ?? "";
    const first = await h.client.login({
      email,
      password,
      secondFactor: { case: "recoveryCode", value: code.toLowerCase().replace("-", "") },
    });
    assert.equal(first.result.case, "tokens");
    const again = await h.client.login({
      email,
      password,
      secondFactor: { case: "recoveryCode", value: code },
    });
    assert.equal(again.result.case, "mfaRequired");
    assert.equal(again.result.value?.reason, MfaChallengeReason.CODE_INVALID);
    const other = await h.client.login({
      email,
      password,
      secondFactor: { case: "recoveryCode", value: recoveryCodes[4] ?? "" },
    });
    assert.equal(other.result.case, "tokens");
  });

  test("DisableTotp needs a right code: wrong is permission_denied; then MFA is off and Login needs no code", async () => {
    const { email, secret, auth, userId, recoveryCodes } = await withMfa(h);
    assert.equal(
      await codeOf(h.client.disableTotp({ proof: { case: "code", value: wrongCode(h, secret) } }, auth)),
      Code.PermissionDenied,
    );
    assert.equal(
      await codeOf(h.client.disableTotp({ proof: { case: "recoveryCode", value: "AAAAA-AAAAA" } }, auth)),
      Code.PermissionDenied,
    );
    await h.client.disableTotp({ proof: { case: "code", value: codeAt(h, secret) } }, auth);
    await h.waitForEvent(MfaDisabledSchema, (e) => e.userId === userId);
    const res = await h.client.login({ email, password });
    assert.equal(res.result.case, "tokens");
    assert.equal(
      await codeOf(h.client.disableTotp({ proof: { case: "code", value: "123456" } }, auth)),
      Code.FailedPrecondition,
    );
    const [left] = await h.sql`select count(*)::int as n from recovery_codes where user_id = ${userId}`;
    assert.equal(left?.n, 0);
    assert.equal(recoveryCodes.length, 10);
  });

  test("DisableTotp accepts an unused recovery code", async () => {
    const { recoveryCodes, auth, email } = await withMfa(h);
    await h.client.disableTotp({ proof: { case: "recoveryCode", value: recoveryCodes[0] ?? "" } }, auth);
    assert.equal((await h.client.login({ email, password })).result.case, "tokens");
  });
});
