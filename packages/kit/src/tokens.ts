import { createPublicKey, KeyObject, verify as verifySignature, type webcrypto } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type CompactJWSHeaderParameters,
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  decodeProtectedHeader,
  type FetchImplementation,
  type JSONWebKeySet,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
} from "jose";
import type { Principal } from "./context.ts";

/** The signature algorithms an access token may use; anything else (none, HS256, RS256 …) is rejected. */
export const accessTokenAlgorithms = ["EdDSA", "ES256"] as const;

/** The longest an access token may live (exp - iat), in seconds. */
export const maxAccessTokenLifetimeSec = 900;

/** Where the verifier gets its keys and what it expects of a token. Give exactly one key source. */
export interface TokenVerifierOptions {
  /** URL of the issuer's JWKS; fetched lazily, cached, refetched on an unknown kid after the cooldown. */
  readonly jwksUrl?: string | URL;
  /** A fixed key set (tests, or a service that loads keys itself). */
  readonly jwks?: JSONWebKeySet;
  /** A custom key resolver, as jose's jwtVerify takes it. */
  readonly getKey?: JWTVerifyGetKey;
  /** Expected `iss`. */
  readonly issuer: string;
  /** Expected `aud` (one of). */
  readonly audience: string | readonly string[];
  /** Clock skew allowed on exp/iat/nbf, seconds (default 5). */
  readonly clockToleranceSec?: number;
  /** How long fetched keys are trusted before a refetch, ms (default 10 minutes). */
  readonly cacheMaxAgeMs?: number;
  /** Least time between two fetches triggered by unknown kids, ms (default 30 s). */
  readonly cooldownMs?: number;
  /** JWKS fetch timeout, ms (default 5 s). */
  readonly timeoutMs?: number;
  /** fetch to use for the JWKS (default: global fetch). */
  readonly fetch?: FetchImplementation;
  /** Says whether a session was revoked (the gateway feeds it from auth's session.revoked events). */
  readonly isRevoked?: (sessionId: string) => boolean | Promise<boolean>;
}

/** Verifies access tokens and turns them into principals. */
export interface TokenVerifier {
  /**
   * Resolves to the token's principal. Rejects with unauthenticated for any bad, expired, revoked
   * or malformed token (the reason is in `cause`, never in the message), and with unavailable when
   * the issuer's keys cannot be fetched.
   */
  verify(token: string): Promise<Principal>;
}

/** Creates a verifier for access tokens issued by auth (asymmetric JWT, at most 15 minutes). */
export function createTokenVerifier(options: TokenVerifierOptions): TokenVerifier {
  const getKey = keyResolver(options);
  const expected: ExpectedClaims = {
    issuer: options.issuer,
    audiences: typeof options.audience === "string" ? [options.audience] : [...options.audience],
    toleranceSec: options.clockToleranceSec ?? 5,
  };
  const isRevoked = options.isRevoked;

  return {
    async verify(token) {
      let payload: JWTPayload;
      try {
        payload = await verifyJwt(token, getKey, expected);
      } catch (error) {
        if (error instanceof KeySourceError) {
          throw new ConnectError(
            "token keys unavailable",
            Code.Unavailable,
            undefined,
            undefined,
            error.cause,
          );
        }
        throw unauthenticated(error);
      }
      const principal = toPrincipal(payload, token);
      if (isRevoked && (await isRevoked(principal.sessionId))) {
        throw unauthenticated(new Error("session revoked"));
      }
      return principal;
    },
  };
}

interface ExpectedClaims {
  readonly issuer: string;
  readonly audiences: readonly string[];
  readonly toleranceSec: number;
}

/**
 * Verifies a compact JWS access token and returns its claims. jose parses the header and resolves
 * the key (JWKS caching, kid and alg matching); the signature is checked with node:crypto, whose
 * verify runs synchronously: jose's own check goes through WebCrypto, a thread-pool job per token
 * that made verification 2.3 times slower than a bare crypto.verify (bench/auth.ts). The claim
 * checks are jose's rules for the options tokens were verified with before: iss, one of aud,
 * exp/nbf/iat with the clock tolerance, iat not in the future and at most 15 minutes old.
 */
async function verifyJwt(
  token: string,
  getKey: JWTVerifyGetKey,
  expected: ExpectedClaims,
): Promise<JWTPayload> {
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("not a compact JWS");
  const [head = "", body = "", sig = ""] = parts;
  const header = decodeProtectedHeader(token);
  const alg = header.alg;
  if (!accessTokenAlgorithms.includes(alg as never)) throw new Error(`alg ${String(alg)} is not allowed`);
  if (header.crit !== undefined) throw new Error("crit header parameters are not supported");
  if (header.b64 !== undefined) throw new Error("b64 header parameter is not supported");
  const key = publicKeyOf(
    await getKey(header as CompactJWSHeaderParameters, { payload: body, signature: sig, protected: head }),
  );
  const signed = Buffer.from(`${head}.${body}`);
  const signature = Buffer.from(sig, "base64url");
  const ok =
    alg === "ES256"
      ? key.asymmetricKeyType === "ec" &&
        key.asymmetricKeyDetails?.namedCurve === "prime256v1" &&
        verifySignature("sha256", signed, { key, dsaEncoding: "ieee-p1363" }, signature)
      : (key.asymmetricKeyType === "ed25519" || key.asymmetricKeyType === "ed448") &&
        verifySignature(null, signed, key, signature);
  if (!ok) throw new Error("signature verification failed");

  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(body, "base64url").toString("utf8"));
  } catch {
    throw new Error("payload is not JSON");
  }
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) {
    throw new Error("payload is not a JSON object");
  }
  const claims = payload as JWTPayload;
  const now = Math.floor(Date.now() / 1000);
  const tolerance = expected.toleranceSec;
  for (const claim of ["iss", "aud", "exp", "iat", "sub", "tid", "sid"]) {
    if (!(claim in claims)) throw new Error(`missing required claim ${claim}`);
  }
  if (claims.iss !== expected.issuer) throw new Error("unexpected iss");
  const aud = typeof claims.aud === "string" ? [claims.aud] : claims.aud;
  if (!Array.isArray(aud) || !aud.some((a) => expected.audiences.includes(a)))
    throw new Error("unexpected aud");
  const { exp, nbf, iat } = claims;
  if (typeof exp !== "number" || typeof iat !== "number") throw new Error("exp and iat must be numbers");
  if (nbf !== undefined && typeof nbf !== "number") throw new Error("nbf must be a number");
  if (exp <= now - tolerance) throw new Error("token expired");
  if (nbf !== undefined && nbf > now + tolerance) throw new Error("token not yet valid");
  const age = now - iat;
  if (age < -tolerance) throw new Error("iat is in the future");
  if (age - tolerance > maxAccessTokenLifetimeSec) throw new Error("token too old");
  return claims;
}

// WebCrypto's key class (a global in Node 20, missing from node:crypto's webcrypto object).
const CryptoKeyClass = (globalThis as unknown as { CryptoKey: abstract new () => object }).CryptoKey;

// Public keys as node:crypto KeyObjects, converted once per key the resolver hands out.
const keyObjects = new WeakMap<object, KeyObject>();

function publicKeyOf(key: unknown): KeyObject {
  if (key instanceof Uint8Array) throw new Error("symmetric keys are not accepted");
  if (key instanceof KeyObject) return key.type === "public" ? key : createPublicKey(key);
  if (typeof key !== "object" || key === null) throw new Error("no key");
  let converted = keyObjects.get(key);
  if (!converted) {
    converted =
      key instanceof CryptoKeyClass
        ? publicKeyOf(KeyObject.from(key as webcrypto.CryptoKey))
        : createPublicKey({ key: key as JWK as never, format: "jwk" });
    if (converted.type !== "public") converted = createPublicKey(converted);
    keyObjects.set(key, converted);
  }
  return converted;
}

function unauthenticated(cause: unknown): ConnectError {
  return new ConnectError("invalid access token", Code.Unauthenticated, undefined, undefined, cause);
}

function toPrincipal(payload: JWTPayload, token: string): Principal {
  const { sub, tid, sid, exp, iat } = payload;
  if (typeof exp !== "number" || typeof iat !== "number" || exp - iat > maxAccessTokenLifetimeSec) {
    throw unauthenticated(new Error("token lifetime exceeds the maximum"));
  }
  if (!nonEmpty(sub) || !nonEmpty(tid) || !nonEmpty(sid)) {
    throw unauthenticated(new Error("token lacks sub, tid or sid"));
  }
  const roles = stringList(payload.roles, "roles");
  const permissions = new Set([
    ...stringList(payload.perms, "perms"),
    ...stringList(payload.permissions, "permissions"),
  ]);
  return { userId: sub, tenantId: tid, sessionId: sid, roles, permissions, token };
}

function nonEmpty(value: unknown): value is string {
  return typeof value === "string" && value.length > 0;
}

function stringList(value: unknown, claim: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
    throw unauthenticated(new Error(`token claim ${claim} is not a list of strings`));
  }
  return value;
}

/** Marks a failure to obtain keys (network, bad JWKS response), as opposed to a bad token. */
class KeySourceError extends Error {}

const tokenFaults = new Set([
  "ERR_JWKS_NO_MATCHING_KEY",
  "ERR_JWKS_MULTIPLE_MATCHING_KEYS",
  "ERR_JWK_INVALID",
]);

function keyResolver(options: TokenVerifierOptions): JWTVerifyGetKey {
  const sources = [options.jwksUrl, options.jwks, options.getKey].filter((s) => s !== undefined);
  if (sources.length !== 1) {
    throw new Error("createTokenVerifier needs exactly one of jwksUrl, jwks or getKey");
  }
  if (options.getKey) return options.getKey;
  if (options.jwks) return createLocalJWKSet(options.jwks);
  const remote = createRemoteJWKSet(new URL(String(options.jwksUrl)), {
    cacheMaxAge: options.cacheMaxAgeMs ?? 10 * 60_000,
    cooldownDuration: options.cooldownMs ?? 30_000,
    timeoutDuration: options.timeoutMs ?? 5_000,
    ...(options.fetch ? { [customFetch]: options.fetch } : {}),
  });
  return async (header, input) => {
    try {
      return await remote(header, input);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (typeof code === "string" && tokenFaults.has(code)) throw error;
      throw new KeySourceError("JWKS unavailable", { cause: error });
    }
  };
}
