import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { AuthService } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { SessionRevokedSchema, SessionRevokeReason } from "@trellis/gen/trellis/auth/v1/events_pb.js";
import { requirePrincipal } from "@trellis/kit/access.js";
import { notFound, tokensMessage } from "./request.ts";
import { randomToken, sha256 } from "./secrets.ts";
import type { AuthDeps } from "./sign-in.ts";
import type { Tx } from "./store.ts";

/** Revokes a session inside tx and publishes SessionRevoked; false when it was already revoked. */
export async function revokeSession(
  tx: Tx,
  sessionId: string,
  reason: SessionRevokeReason,
): Promise<boolean> {
  const row = await tx.revokeSession(sessionId, reason);
  if (!row) return false;
  await tx.emit(SessionRevokedSchema, {
    sessionId: row.id,
    userId: row.userId,
    tenantId: row.tenantId,
    reason,
    accessTokensExpireAt: timestampFromDate(row.accessExpiresAt),
    occurredAt: timestampFromDate(row.revokedAt ?? new Date()),
  });
  return true;
}

function invalidRefreshToken(): ConnectError {
  return new ConnectError("invalid refresh token", Code.Unauthenticated);
}

type RefreshOutcome =
  | { readonly kind: "invalid" }
  | {
      readonly kind: "reused";
      readonly sessionId: string;
      readonly userId: string;
      readonly tenantId: string;
    }
  | { readonly kind: "ok"; readonly tokens: Parameters<typeof tokensMessage>[0] };

/** Refresh, Logout, ListSessions and RevokeSession. */
export function createSessionHandlers(
  deps: AuthDeps,
): Pick<ServiceImpl<typeof AuthService>, "refresh" | "logout" | "listSessions" | "revokeSession"> {
  const { store, config } = deps;
  return {
    async refresh(req) {
      const hash = sha256(req.refreshToken);
      const outcome = await store.transaction(async (tx): Promise<RefreshOutcome> => {
        const row = await tx.refreshTokenForUpdate(hash);
        if (!row || row.revokedAt) return { kind: "invalid" };
        if (row.usedAt) {
          // A spent token came back: whoever holds the live one may be a thief. End the session.
          await revokeSession(tx, row.sessionId, SessionRevokeReason.REFRESH_TOKEN_REUSE);
          return { kind: "reused", sessionId: row.sessionId, userId: row.userId, tenantId: row.tenantId };
        }
        const now = Date.now();
        if (row.expiresAt.getTime() <= now) return { kind: "invalid" };
        const grant = await deps.grants.of(tx, row.tenantId, row.userId);
        if (!grant) return { kind: "invalid" };
        const access = await deps.keys.sign({
          userId: row.userId,
          tenantId: row.tenantId,
          sessionId: row.sessionId,
          ...grant,
        });
        const refreshToken = randomToken();
        const refreshExpiresAt = new Date(
          Math.min(now + config.REFRESH_TOKEN_TTL, row.maxExpiresAt.getTime()),
        );
        await tx.spendRefreshToken(hash);
        await tx.insertRefreshToken(sha256(refreshToken), row.sessionId, refreshExpiresAt);
        await tx.touchSession(row.sessionId, refreshExpiresAt, access.expiresAt);
        return {
          kind: "ok",
          tokens: {
            accessToken: access.token,
            accessTokenExpiresAt: access.expiresAt,
            refreshToken,
            refreshTokenExpiresAt: refreshExpiresAt,
            sessionId: row.sessionId,
          },
        };
      });
      // The revocation above must commit, so the error is thrown only after the transaction.
      if (outcome.kind === "reused") {
        const { sessionId, userId, tenantId } = outcome;
        deps.logger.warn(
          { session_id: sessionId, user_id: userId, tenant_id: tenantId },
          "spent refresh token presented again: session revoked",
        );
      }
      if (outcome.kind !== "ok") throw invalidRefreshToken();
      return { tokens: tokensMessage(outcome.tokens) };
    },

    async logout(_req, ctx) {
      const p = requirePrincipal(ctx);
      await store.transaction(async (tx) => {
        const session = await tx.session(p.tenantId, p.userId, p.sessionId);
        if (session) await revokeSession(tx, session.id, SessionRevokeReason.LOGOUT);
      });
      return {};
    },

    async listSessions(_req, ctx) {
      const p = requirePrincipal(ctx);
      const rows = await store.activeSessions(p.tenantId, p.userId);
      return {
        sessions: rows.map((s) => ({
          id: s.id,
          userAgent: s.userAgent,
          ipAddress: s.ipAddress,
          createdAt: timestampFromDate(s.createdAt),
          lastUsedAt: timestampFromDate(s.lastUsedAt),
          current: s.id === p.sessionId,
        })),
      };
    },

    async revokeSession(req, ctx) {
      const p = requirePrincipal(ctx);
      await store.transaction(async (tx) => {
        const session = await tx.session(p.tenantId, p.userId, req.sessionId);
        if (!session) throw notFound("session");
        await revokeSession(tx, session.id, SessionRevokeReason.REVOKED);
      });
      return {};
    },
  };
}
