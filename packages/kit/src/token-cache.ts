import { Code, ConnectError } from "@connectrpc/connect";
import type { Principal } from "./context.ts";
import type { TokenVerifier } from "./tokens.ts";

/** Options of createCachingVerifier. */
export interface TokenCacheOptions {
  /** Tokens remembered at most (the oldest go first; default 10 000). */
  readonly maxEntries?: number;
  /** How long a verified token is trusted without checking its signature again, ms (default 60 s). */
  readonly ttlMs?: number;
  /** Checked on every use, cached or not (the gateway feeds it from auth's session.revoked events). */
  readonly isRevoked?: (sessionId: string) => boolean;
  readonly now?: () => number;
}

function expiryMs(token: string): number {
  try {
    const payload = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8")) as {
      exp?: unknown;
    };
    return typeof payload.exp === "number" ? payload.exp * 1000 : 0;
  } catch {
    return 0;
  }
}

/**
 * Wraps verifier so a token whose signature was verified is trusted again for a short while
 * (never past its exp) without another signature check: clients send the same token for minutes,
 * and a signature check (about a millisecond of CPU for ES256) per request is a service's largest
 * fixed cost. Revocation, when given, is checked every time; only successes are remembered.
 */
export function createCachingVerifier(verifier: TokenVerifier, options: TokenCacheOptions): TokenVerifier {
  const maxEntries = options.maxEntries ?? 10_000;
  const ttlMs = options.ttlMs ?? 60_000;
  const now = options.now ?? Date.now;
  const cache = new Map<string, { principal: Principal; until: number }>();
  return {
    async verify(token) {
      const at = now();
      const hit = cache.get(token);
      if (hit && hit.until > at) {
        if (options.isRevoked?.(hit.principal.sessionId)) {
          cache.delete(token);
          throw new ConnectError("invalid access token", Code.Unauthenticated);
        }
        return hit.principal;
      }
      if (hit) cache.delete(token);
      const principal = await verifier.verify(token);
      const until = Math.min(at + ttlMs, expiryMs(token));
      if (until > at) {
        cache.set(token, { principal, until });
        if (cache.size > maxEntries) {
          const oldest = cache.keys().next().value;
          if (oldest !== undefined) cache.delete(oldest);
        }
      }
      return principal;
    },
  };
}
