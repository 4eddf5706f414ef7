import { Code, ConnectError } from "@connectrpc/connect";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  type FetchImplementation,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
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
  const verifyOptions = {
    algorithms: [...accessTokenAlgorithms],
    issuer: options.issuer,
    audience: typeof options.audience === "string" ? options.audience : [...options.audience],
    clockTolerance: options.clockToleranceSec ?? 5,
    // maxTokenAge makes jose require iat and reject one in the future; the lifetime is checked below.
    maxTokenAge: maxAccessTokenLifetimeSec,
    requiredClaims: ["exp", "sub", "tid", "sid"],
  };
  const isRevoked = options.isRevoked;

  return {
    async verify(token) {
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, getKey, verifyOptions));
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
