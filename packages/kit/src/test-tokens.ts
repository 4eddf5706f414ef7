import { randomBytes, randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import {
  type CryptoKey,
  createLocalJWKSet,
  exportJWK,
  generateKeyPair,
  type JSONWebKeySet,
  type JWK,
  type JWTVerifyGetKey,
  SignJWT,
} from "jose";
import { createTokenVerifier, type TokenVerifier, type TokenVerifierOptions } from "./tokens.ts";

/** Claims and knobs for a test access token; null omits a claim that is otherwise filled in. */
export interface TestTokenClaims {
  readonly sub?: string | null;
  readonly tid?: string | null;
  readonly sid?: string | null;
  readonly roles?: readonly string[];
  readonly perms?: readonly string[];
  /** Lifetime in seconds (default 300). */
  readonly expiresIn?: number;
  /** iat as epoch seconds (default now); set it in the past to make expired tokens. */
  readonly issuedAt?: number;
  /** Sign with this one of the issuer's keys; an unknown kid is written as-is (forgeries). */
  readonly kid?: string;
  readonly issuer?: string;
  readonly audience?: string;
  /** Any further claims. */
  readonly extra?: Readonly<Record<string, unknown>>;
}

/** An in-process token issuer for tests: its own keys, a JWKS, and a tiny JWKS HTTP server. */
export interface TestIssuer {
  readonly alg: "ES256" | "EdDSA";
  readonly issuer: string;
  readonly audience: string;
  /** kid of the key that signs by default (the newest). */
  readonly kid: string;
  /** How many times the served JWKS was fetched. */
  readonly jwksRequests: number;
  /** The public keys, as the issuer would publish them. */
  jwks(): JSONWebKeySet;
  /** Signs an access token; sub/tid/sid default to test values, sid to a fresh one. */
  sign(claims?: TestTokenClaims): Promise<string>;
  /** Adds a new signing key (published alongside the old ones) and returns its kid. */
  rotate(): Promise<string>;
  /** Serves the JWKS over HTTP on 127.0.0.1 (port 0) and returns its URL; idempotent. */
  serve(): Promise<string>;
  /** A verifier trusting this issuer's current and future keys in-process (no HTTP). */
  verifier(overrides?: Partial<TokenVerifierOptions>): TokenVerifier;
  /** Stops the JWKS server, if any. */
  close(): Promise<void>;
}

interface Key {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly jwk: JWK;
}

/** Creates a test issuer with one fresh key pair (ES256 by default). */
export async function createTestIssuer(
  options: { alg?: "ES256" | "EdDSA"; issuer?: string; audience?: string } = {},
): Promise<TestIssuer> {
  const alg = options.alg ?? "ES256";
  const issuer = options.issuer ?? "https://auth.trellis.test";
  const audience = options.audience ?? "trellis";
  const keys: Key[] = [];
  let server: Server | undefined;
  let url: string | undefined;
  let jwksRequests = 0;

  const newKey = async (): Promise<Key> => {
    const pair = await generateKeyPair(alg);
    const kid = `test-${randomBytes(6).toString("hex")}`;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid, alg, use: "sig" };
    const key = { kid, privateKey: pair.privateKey, jwk };
    keys.push(key);
    return key;
  };
  await newKey();
  const current = (): Key => keys[keys.length - 1] as Key;
  const jwks = (): JSONWebKeySet => ({ keys: keys.map((k) => ({ ...k.jwk })) });

  return {
    alg,
    issuer,
    audience,
    get kid() {
      return current().kid;
    },
    get jwksRequests() {
      return jwksRequests;
    },
    jwks,
    async sign(claims = {}) {
      const key = keys.find((k) => k.kid === claims.kid) ?? current();
      const iat = claims.issuedAt ?? Math.floor(Date.now() / 1000);
      const payload: Record<string, unknown> = {
        roles: [...(claims.roles ?? [])],
        perms: [...(claims.perms ?? [])],
        ...claims.extra,
      };
      const set = (name: string, value: string | null | undefined, fallback: string) => {
        if (value !== null) payload[name] = value ?? fallback;
      };
      set("sub", claims.sub, "user-1");
      set("tid", claims.tid, "tenant-1");
      set("sid", claims.sid, `sess-${randomUUID()}`);
      return new SignJWT(payload)
        .setProtectedHeader({ alg, kid: claims.kid ?? key.kid, typ: "at+jwt" })
        .setIssuer(claims.issuer ?? issuer)
        .setAudience(claims.audience ?? audience)
        .setIssuedAt(iat)
        .setExpirationTime(iat + (claims.expiresIn ?? 300))
        .sign(key.privateKey);
    },
    async rotate() {
      return (await newKey()).kid;
    },
    async serve() {
      if (url) return url;
      const s = createServer((_req, res) => {
        jwksRequests++;
        res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
        res.end(JSON.stringify(jwks()));
      });
      server = s;
      await new Promise<void>((resolve, reject) => {
        s.once("error", reject);
        s.listen(0, "127.0.0.1", () => resolve());
      });
      url = `http://127.0.0.1:${(s.address() as AddressInfo).port}/.well-known/jwks.json`;
      return url;
    },
    verifier(overrides = {}) {
      const ownSource = overrides.jwks ?? overrides.jwksUrl ?? overrides.getKey;
      // Rebuilt when rotate() adds a key, so new keys are trusted at once.
      let local = { size: 0, set: createLocalJWKSet({ keys: [] }) };
      const getKey: JWTVerifyGetKey = (header, input) => {
        if (local.size !== keys.length) local = { size: keys.length, set: createLocalJWKSet(jwks()) };
        return local.set(header, input);
      };
      return createTokenVerifier({ ...(ownSource ? {} : { getKey }), issuer, audience, ...overrides });
    },
    async close() {
      const s = server;
      server = undefined;
      url = undefined;
      if (!s) return;
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    },
  };
}
