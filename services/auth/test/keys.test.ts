import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { GetJwksResponseSchema } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { createTokenVerifier } from "@trellis/kit/tokens.js";
import type { JSONWebKeySet } from "jose";
import { createSigningKeys } from "../src/keys.ts";
import { createSealer } from "../src/secrets.ts";
import {
  type AuthHarness,
  bearer,
  codeAt,
  decodeJwt,
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

async function jwks(h: AuthHarness): Promise<JSONWebKeySet> {
  return toJson(GetJwksResponseSchema, await h.client.getJwks({})) as unknown as JSONWebKeySet;
}

async function freshToken(h: AuthHarness, email: string): Promise<string> {
  const res = await h.client.login({ email, password });
  if (res.result.case !== "tokens") throw new Error("expected tokens");
  return res.result.value.accessToken;
}

describe("access tokens and signing keys", () => {
  let h: AuthHarness;
  before(async () => {
    h = await startAuth({
      SIGNING_KEY_MAX_AGE: "1h",
      SIGNING_KEY_RETIRE_MARGIN: "1m",
      SIGNING_KEY_PUBLISH_LEAD: "2m",
    });
  });
  after(() => h.close());

  test("tokens are ES256 JWTs of at most 15 minutes with sub, tid, sid, roles, perms, aud, iss and a kid", async () => {
    const { tokens, userId, tenantId } = await signUp(h);
    const { header, claims } = decodeJwt(tokens.accessToken);
    const set = await jwks(h);
    assert.equal(header.alg, "ES256");
    assert.equal(header.typ, "at+jwt");
    assert.equal(header.kid, set.keys[0]?.kid);
    assert.equal(claims.sub, userId);
    assert.equal(claims.tid, tenantId);
    assert.equal(claims.sid, tokens.sessionId);
    assert.equal(claims.iss, "trellis-auth");
    assert.equal(claims.aud, "trellis");
    assert.ok((claims.exp as number) - (claims.iat as number) <= 900);
    assert.equal(Number(tokens.accessTokenExpiresAt?.seconds), claims.exp);
    assert.deepEqual(set.keys[0] && Object.keys(set.keys[0]).sort(), [
      "alg",
      "crv",
      "kid",
      "kty",
      "use",
      "x",
      "y",
    ]);

    // The kit's verifier, fed the published JWKS as the gateway would be, accepts the token.
    const verifier = createTokenVerifier({ jwks: set, issuer: "trellis-auth", audience: "trellis" });
    const principal = await verifier.verify(tokens.accessToken);
    assert.equal(principal.userId, userId);
    assert.equal(principal.tenantId, tenantId);
    assert.ok(principal.permissions.has("auth.members.invite"));
  });

  test("a tampered token is unauthenticated", async () => {
    const { tokens } = await signUp(h);
    const [head, body, sig] = tokens.accessToken.split(".");
    const claims = JSON.parse(Buffer.from(body ?? "", "base64url").toString());
    claims.perms = [...claims.perms, "billing.clock.advance"];
    const forged = `${head}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${sig}`;
    assert.equal(await codeOf(h.client.listSessions({}, bearer(forged))), Code.Unauthenticated);
  });

  test("rotation: a new key is published first, signs after the lead, and old tokens stay valid", async () => {
    const { email, tokens } = await signUp(h);
    const oldKid = decodeJwt(tokens.accessToken).header.kid;
    assert.equal((await h.app.rotateKeys()).created, undefined, "a young key is kept");
    const rotated = await h.app.rotateKeys({ force: true });
    assert.ok(rotated.created);
    // Published at once, current key first; the old key still signs during the lead.
    assert.deepEqual(
      (await jwks(h)).keys.map((k) => k.kid),
      [oldKid, rotated.created],
    );
    assert.equal(decodeJwt(await freshToken(h, email)).header.kid, oldKid);

    h.clock.advance(2 * 60_000);
    const newToken = await freshToken(h, email);
    assert.equal(decodeJwt(newToken).header.kid, rotated.created);
    assert.deepEqual(
      (await jwks(h)).keys.map((k) => k.kid),
      [rotated.created, oldKid],
    );
    await h.client.listSessions({}, bearer(tokens.accessToken));
    await h.client.listSessions({}, bearer(newToken));
  });

  test("a key older than SIGNING_KEY_MAX_AGE is replaced, and superseded keys leave once their tokens expired", async () => {
    const { email } = await signUp(h);
    const before = (await jwks(h)).keys.map((k) => k.kid);
    const current = before[0];
    // An hour later the current key is too old, and the ones it superseded are past 15 minutes
    // plus the margin.
    h.clock.advance(61 * 60_000);
    const result = await h.app.rotateKeys();
    assert.ok(result.created);
    assert.deepEqual([...result.deleted].sort(), before.slice(1).sort());
    assert.deepEqual(
      (await jwks(h)).keys.map((k) => k.kid),
      [current, result.created],
    );
    h.clock.advance(2 * 60_000);
    assert.equal(decodeJwt(await freshToken(h, email)).header.kid, result.created);
  });

  test("a key created by another instance is trusted on first sight (reload on unknown kid)", async () => {
    const { email } = await signUp(h);
    const other = createSigningKeys({
      store: h.app.store,
      sealer: createSealer(undefined),
      alg: "ES256",
      issuer: "trellis-auth",
      audience: "trellis",
      accessTtlMs: 900_000,
      maxAgeMs: 3_600_000,
      retireMarginMs: 60_000,
      publishLeadMs: 0,
      clock: h.clock.now,
    });
    await other.init();
    const created = (await other.rotate({ force: true })).created;
    const claims = decodeJwt(await freshToken(h, email)).claims;
    const token = await other.sign({
      userId: claims.sub as string,
      tenantId: claims.tid as string,
      sessionId: claims.sid as string,
      roles: ["owner"],
      permissions: [],
    });
    assert.equal(token.kid, created);
    const principal = await h.app.verifier.verify(token.token);
    assert.equal(principal.userId, claims.sub);
  });

  test("private keys are stored as JWK (plain without AUTH_ENCRYPTION_KEY)", async () => {
    const rows = await h.sql`select private_key from signing_keys`;
    assert.ok(rows.length > 0);
    for (const row of rows) assert.ok((row.private_key as string).startsWith("plain.{"));
  });
});

describe("with AUTH_ENCRYPTION_KEY", () => {
  let h: AuthHarness;
  before(async () => {
    h = await startAuth({ AUTH_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString("base64"), JWT_ALG: "EdDSA" });
  });
  after(() => h.close());

  test("signing keys and TOTP secrets are sealed at rest, and everything still works (EdDSA)", async () => {
    const { tokens, email, userId } = await signUp(h);
    assert.equal(decodeJwt(tokens.accessToken).header.alg, "EdDSA");
    const set = await jwks(h);
    assert.equal(set.keys[0]?.kty, "OKP");
    assert.equal(set.keys[0]?.crv, "Ed25519");
    const [key] = await h.sql`select private_key from signing_keys`;
    assert.match(key?.private_key as string, /^v1\./);

    const auth = bearer(tokens.accessToken);
    const { secret } = await h.client.enrollTotp({}, auth);
    await h.client.confirmTotp({ code: codeAt(h, secret) }, auth);
    const [user] = await h.sql<{ totp_secret: string }[]>`select totp_secret from users where id = ${userId}`;
    assert.match(user?.totp_secret ?? "", /^v1\./);
    assert.ok(!(user?.totp_secret ?? secret).includes(secret));
    h.clock.advance(30_000);
    const res = await h.client.login({
      email,
      password,
      secondFactor: { case: "totpCode", value: codeAt(h, secret) },
    });
    assert.equal(res.result.case, "tokens");
  });
});
