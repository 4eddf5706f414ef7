import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { MfaChallengeReason } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { UserLoggedInSchema } from "@trellis/gen/trellis/auth/v1/events_pb.js";
import { uuidv7 } from "@trellis/kit/events.js";
import type { Logger } from "@trellis/kit/logger.js";
import type { AuthConfig } from "./config.ts";
import type { Grants } from "./grants.ts";
import type { SigningKeys } from "./keys.ts";
import type { PasswordHasher } from "./passwords.ts";
import type { ClientInfo, IssuedTokens, SecondFactor } from "./request.ts";
import { randomToken, recoveryCodeHash, type Sealer, sha256 } from "./secrets.ts";
import type { Queries, Store, Tx, UserRow } from "./store.ts";
import type { Throttle } from "./throttle.ts";
import { matchTotp } from "./totp.ts";

/** Everything auth's handlers use. */
export interface AuthDeps {
  readonly store: Store;
  readonly keys: SigningKeys;
  readonly passwords: PasswordHasher;
  readonly sealer: Sealer;
  readonly throttle: Throttle;
  readonly grants: Grants;
  readonly config: AuthConfig;
  readonly logger: Logger;
  /** The time TOTP codes are checked against (tests move it). */
  readonly clock: () => number;
}

/** The same answer for an unknown email, a wrong password and a tenant the user is not in. */
export function badCredentials(): ConnectError {
  return new ConnectError("invalid email or password", Code.Unauthenticated);
}

/**
 * Checks an email and password under the throttle: resource_exhausted while locked; the user when
 * right; otherwise counts a failure and throws unauthenticated. Unknown emails are checked against
 * a dummy hash, so they cost the same argon2 work as wrong passwords.
 */
export async function checkPassword(
  deps: AuthDeps,
  email: string,
  password: string,
  client: ClientInfo,
): Promise<{ user: UserRow; hadFailures: boolean }> {
  const { accountFailures } = await deps.throttle.check(email, client.ipAddress);
  const user = await deps.store.userByEmail(email);
  const ok = await deps.passwords.verify(user?.passwordHash, password);
  if (!ok || !user) {
    await deps.throttle.fail(email, client.ipAddress);
    throw badCredentials();
  }
  return { user, hadFailures: accountFailures };
}

/** Whether code proves the user's second factor now; spends it (a TOTP step or a recovery code). */
export async function spendSecondFactor(
  deps: AuthDeps,
  q: Queries,
  user: UserRow,
  factor: NonNullable<SecondFactor>,
) {
  if (factor.kind === "recovery") return q.useRecoveryCode(user.id, recoveryCodeHash(factor.code));
  if (!user.totpSecret) return false;
  const step = matchTotp(deps.sealer.open(user.totpSecret, user.id), factor.code, deps.clock());
  return step !== undefined && (await q.useTotpStep(user.id, step));
}

/** Outcome of the MFA step of a sign-in. */
export type MfaOutcome =
  | { readonly passed: true; readonly mfaUsed: boolean }
  | { readonly passed: false; readonly reason: MfaChallengeReason };

/** Applies the user's MFA to a sign-in; a wrong code counts as a failed sign-in. */
export async function checkSecondFactor(
  deps: AuthDeps,
  user: UserRow,
  factor: SecondFactor,
  client: ClientInfo,
): Promise<MfaOutcome> {
  if (!user.totpSecret) return { passed: true, mfaUsed: false };
  if (!factor) return { passed: false, reason: MfaChallengeReason.CODE_REQUIRED };
  if (await spendSecondFactor(deps, deps.store, user, factor)) return { passed: true, mfaUsed: true };
  await deps.throttle.fail(user.email, client.ipAddress);
  return { passed: false, reason: MfaChallengeReason.CODE_INVALID };
}

/** What a new session is for. */
export interface SessionSubject {
  readonly userId: string;
  readonly tenantId: string;
  readonly client: ClientInfo;
  readonly mfaUsed: boolean;
}

/**
 * Opens a session inside tx: the session row, its first refresh token, UserLoggedIn, and an access
 * token carrying the member's live roles and permissions.
 */
export async function openSession(deps: AuthDeps, tx: Tx, s: SessionSubject): Promise<IssuedTokens> {
  const grant = await deps.grants.of(tx, s.tenantId, s.userId);
  if (!grant) throw badCredentials();
  const sessionId = uuidv7();
  const now = Date.now();
  const maxExpiresAt = new Date(now + deps.config.SESSION_MAX_AGE);
  const refreshExpiresAt = new Date(Math.min(now + deps.config.REFRESH_TOKEN_TTL, maxExpiresAt.getTime()));
  const access = await deps.keys.sign({ userId: s.userId, tenantId: s.tenantId, sessionId, ...grant });
  await tx.insertSession({
    id: sessionId,
    tenantId: s.tenantId,
    userId: s.userId,
    userAgent: s.client.userAgent,
    ipAddress: s.client.ipAddress,
    mfaUsed: s.mfaUsed,
    expiresAt: refreshExpiresAt,
    maxExpiresAt,
    accessExpiresAt: access.expiresAt,
  });
  const refreshToken = randomToken();
  await tx.insertRefreshToken(sha256(refreshToken), sessionId, refreshExpiresAt);
  await tx.emit(UserLoggedInSchema, {
    userId: s.userId,
    tenantId: s.tenantId,
    sessionId,
    mfaUsed: s.mfaUsed,
    occurredAt: timestampFromDate(new Date(now)),
  });
  return {
    accessToken: access.token,
    accessTokenExpiresAt: access.expiresAt,
    refreshToken,
    refreshTokenExpiresAt: refreshExpiresAt,
    sessionId,
  };
}
