import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { base64url, exportJWK, generateKeyPair, SignJWT } from "jose";
import { createTestIssuer, type TestIssuer, type TestTokenClaims } from "../src/test-tokens.ts";
import { createTokenVerifier } from "../src/tokens.ts";

async function assertCode(promise: Promise<unknown>, code: Code): Promise<ConnectError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ConnectError, `expected a ConnectError, got ${error}`);
    assert.equal(error.code, code, `expected ${Code[code]}, got ${Code[error.code]}`);
    return error;
  }
  assert.fail(`expected ${Code[code]}, but the promise resolved`);
}

const now = () => Math.floor(Date.now() / 1000);

for (const alg of ["ES256", "EdDSA"] as const) {
  describe(`token verifier (${alg}, local JWKS)`, () => {
    let issuer: TestIssuer;
    let other: TestIssuer;
    before(async () => {
      issuer = await createTestIssuer({ alg });
      other = await createTestIssuer({ alg });
    });

    const verifier = () =>
      createTokenVerifier({ jwks: issuer.jwks(), issuer: issuer.issuer, audience: issuer.audience });

    it("maps a valid token's claims to a principal", async () => {
      const token = await issuer.sign({
        sub: "u1",
        tid: "t1",
        sid: "s1",
        roles: ["member"],
        perms: ["billing.invoices.read", "testing.whoami"],
      });
      const p = await verifier().verify(token);
      assert.equal(p.userId, "u1");
      assert.equal(p.tenantId, "t1");
      assert.equal(p.sessionId, "s1");
      assert.deepEqual(p.roles, ["member"]);
      assert.deepEqual([...p.permissions].sort(), ["billing.invoices.read", "testing.whoami"]);
      assert.equal(p.token, token);
    });

    it("accepts the `permissions` claim as well as `perms`", async () => {
      const token = await issuer.sign({ perms: [], extra: { permissions: ["a.b"] } });
      const p = await verifier().verify(token);
      assert.ok(p.permissions.has("a.b"));
    });

    const rejected: Array<[string, () => Promise<string>]> = [
      ["expired", () => issuer.sign({ issuedAt: now() - 600, expiresIn: 300 })],
      ["wrong issuer", () => issuer.sign({ issuer: "https://evil.example" })],
      ["wrong audience", () => issuer.sign({ audience: "someone-else" })],
      ["forged (another key, same kid)", () => other.sign({ kid: issuer.kid })],
      ["lifetime over 15 minutes", () => issuer.sign({ expiresIn: 901 })],
      ["issued in the future", () => issuer.sign({ issuedAt: now() + 120 })],
      ...(["sub", "tid", "sid"] as const).map((claim): [string, () => Promise<string>] => [
        `missing ${claim}`,
        () => issuer.sign({ [claim]: null } as TestTokenClaims),
      ]),
      ["roles not a list", () => issuer.sign({ extra: { roles: "admin" } })],
      ["alg none", async () => unsigned({ alg: "none", kid: issuer.kid })],
      [
        "HS256 with a shared secret",
        () =>
          new SignJWT(claimsFor(issuer))
            .setProtectedHeader({ alg: "HS256", kid: issuer.kid })
            .sign(new TextEncoder().encode("x".repeat(32))),
      ],
      ["garbage", async () => "not.a.jwt"],
      ["empty", async () => ""],
      ["not yet valid (nbf)", () => issuer.sign({ extra: { nbf: now() + 120 } })],
      [
        "payload changed after signing",
        async () => {
          const [head, , sig] = (await issuer.sign({ sub: "u1" })).split(".");
          const body = base64url.encode(JSON.stringify({ ...claimsFor(issuer), sub: "admin" }));
          return `${head}.${body}.${sig}`;
        },
      ],
      [
        "signature cut short",
        async () => {
          const token = await issuer.sign();
          return token.slice(0, -8);
        },
      ],
      [
        "other alg in the header than the key's",
        async () => {
          const [, body, sig] = (await issuer.sign()).split(".");
          const head = base64url.encode(
            JSON.stringify({ alg: alg === "ES256" ? "EdDSA" : "ES256", kid: issuer.kid }),
          );
          return `${head}.${body}.${sig}`;
        },
      ],
      [
        "a crit header",
        async () => {
          const [, body, sig] = (await issuer.sign()).split(".");
          const head = base64url.encode(JSON.stringify({ alg, kid: issuer.kid, crit: ["exp"] }));
          return `${head}.${body}.${sig}`;
        },
      ],
      [
        "a JSON array payload",
        async () =>
          `${base64url.encode(JSON.stringify({ alg, kid: issuer.kid }))}.${base64url.encode("[1]")}.x`,
      ],
    ];
    for (const [name, make] of rejected) {
      it(`rejects a token: ${name}`, async () => {
        await assertCode(verifier().verify(await make()), Code.Unauthenticated);
      });
    }

    it("rejects claims of the wrong type or missing", async () => {
      const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
      const jwk = { ...(await exportJWK(publicKey)), kid: "own", alg, use: "sig" };
      const v = createTokenVerifier({
        jwks: { keys: [jwk] },
        issuer: issuer.issuer,
        audience: issuer.audience,
      });
      const sign = (claims: Record<string, unknown>) =>
        new SignJWT(claims).setProtectedHeader({ alg, kid: "own" }).sign(privateKey);
      const good = claimsFor(issuer);
      assert.equal((await v.verify(await sign(good))).userId, "u", "the well-formed token passes");
      const { exp: _exp, ...noExp } = good;
      const { iat: _iat, ...noIat } = good;
      for (const claims of [
        { ...good, exp: String(good.exp) },
        { ...good, iat: String(good.iat) },
        { ...good, nbf: "0" },
        { ...good, aud: 7 },
        { ...good, aud: ["x", "y"] },
        noExp,
        noIat,
      ]) {
        await assertCode(v.verify(await sign(claims)), Code.Unauthenticated);
      }
    });

    it("accepts a token just past exp within the clock tolerance", async () => {
      const token = await issuer.sign({ issuedAt: now() - 302, expiresIn: 300 });
      assert.equal((await verifier().verify(token)).userId, "user-1");
      const strict = createTokenVerifier({
        jwks: issuer.jwks(),
        issuer: issuer.issuer,
        audience: issuer.audience,
        clockToleranceSec: 0,
      });
      await assertCode(strict.verify(token), Code.Unauthenticated);
    });

    it("rejects a revoked session", async () => {
      const token = await issuer.sign({ sid: "revoked-1" });
      const v = createTokenVerifier({
        jwks: issuer.jwks(),
        issuer: issuer.issuer,
        audience: issuer.audience,
        isRevoked: async (sid) => sid === "revoked-1",
      });
      await assertCode(v.verify(token), Code.Unauthenticated);
      assert.equal((await v.verify(await issuer.sign({ sid: "live-1" }))).sessionId, "live-1");
    });
  });
}

describe("token verifier (remote JWKS)", () => {
  let issuer: TestIssuer;
  let jwksUrl: string;
  before(async () => {
    issuer = await createTestIssuer();
    jwksUrl = await issuer.serve();
  });
  after(() => issuer.close());

  it("fetches the keys once and refetches on an unknown kid after rotation", async () => {
    const verifier = createTokenVerifier({
      jwksUrl,
      issuer: issuer.issuer,
      audience: issuer.audience,
      cooldownMs: 0,
    });
    const first = await issuer.sign({ sub: "before" });
    assert.equal((await verifier.verify(first)).userId, "before");
    assert.equal((await verifier.verify(first)).userId, "before");
    assert.equal(issuer.jwksRequests, 1, "keys are cached");

    const oldKid = issuer.kid;
    const newKid = await issuer.rotate();
    assert.notEqual(newKid, oldKid);
    const second = await issuer.sign({ sub: "after" });
    assert.equal((await verifier.verify(second)).userId, "after");
    assert.equal(issuer.jwksRequests, 2, "the unknown kid triggered one refetch");
    // Tokens signed with the old key stay valid until they expire.
    assert.equal((await verifier.verify(await issuer.sign({ kid: oldKid }))).userId, "user-1");
  });

  it("rejects an unknown kid that the issuer does not publish either", async () => {
    const stranger = await createTestIssuer();
    const verifier = createTokenVerifier({ jwksUrl, issuer: issuer.issuer, audience: issuer.audience });
    await assertCode(verifier.verify(await stranger.sign()), Code.Unauthenticated);
  });

  it("answers unavailable when the key set cannot be fetched", async () => {
    const down = await createTestIssuer();
    const url = await down.serve();
    await down.close();
    const verifier = createTokenVerifier({ jwksUrl: url, issuer: down.issuer, audience: down.audience });
    await assertCode(verifier.verify(await down.sign()), Code.Unavailable);
  });

  it("refuses to start without exactly one key source", () => {
    assert.throws(() => createTokenVerifier({ issuer: "i", audience: "a" }));
    assert.throws(() => createTokenVerifier({ issuer: "i", audience: "a", jwksUrl, jwks: { keys: [] } }));
  });
});

function claimsFor(issuer: TestIssuer) {
  const iat = now();
  return {
    iss: issuer.issuer,
    aud: issuer.audience,
    sub: "u",
    tid: "t",
    sid: "s",
    iat,
    exp: iat + 300,
  };
}

function unsigned(header: Record<string, unknown>): string {
  const enc = (v: unknown) => base64url.encode(JSON.stringify(v));
  return `${enc(header)}.${enc({ iss: "https://auth.trellis.test", aud: "trellis", sub: "u", tid: "t", sid: "s", iat: now(), exp: now() + 300 })}.`;
}
