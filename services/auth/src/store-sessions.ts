import type { Q } from "./store-accounts.ts";

/** A session as ListSessions and revocation see it. */
export interface SessionRow {
  readonly id: string;
  readonly tenantId: string;
  readonly userId: string;
  readonly userAgent: string;
  readonly ipAddress: string;
  readonly createdAt: Date;
  readonly lastUsedAt: Date;
  readonly accessExpiresAt: Date;
  readonly revokedAt: Date | null;
}

/** A refresh token joined with its session, as Refresh needs it. */
export interface RefreshRow {
  readonly sessionId: string;
  readonly tenantId: string;
  readonly userId: string;
  readonly expiresAt: Date;
  readonly usedAt: Date | null;
  readonly revokedAt: Date | null;
  readonly maxExpiresAt: Date;
}

/** A stored signing key. */
export interface SigningKeyRow {
  readonly kid: string;
  readonly alg: string;
  readonly publicJwk: Record<string, unknown>;
  readonly privateKey: string;
  readonly createdAt: Date;
  readonly activatesAt: Date;
  readonly supersededAt: Date | null;
}

/** Values of a new session. */
export interface NewSession {
  readonly id: string;
  readonly tenantId: string;
  readonly userId: string;
  readonly userAgent: string;
  readonly ipAddress: string;
  readonly mfaUsed: boolean;
  readonly expiresAt: Date;
  readonly maxExpiresAt: Date;
  readonly accessExpiresAt: Date;
}

const sessionColumns = (
  q: Q,
) => q`id, tenant_id as "tenantId", user_id as "userId", user_agent as "userAgent",
  ip_address as "ipAddress", created_at as "createdAt", last_used_at as "lastUsedAt",
  access_expires_at as "accessExpiresAt", revoked_at as "revokedAt"`;

/** SQL for sessions, refresh tokens, sign-in throttling and signing keys. */
export function sessionQueries(q: Q) {
  return {
    async insertSession(s: NewSession): Promise<void> {
      await q`insert into sessions (id, tenant_id, user_id, user_agent, ip_address, mfa_used, expires_at,
          max_expires_at, access_expires_at)
        values (${s.id}, ${s.tenantId}, ${s.userId}, ${s.userAgent}, ${s.ipAddress}, ${s.mfaUsed}, ${s.expiresAt},
          ${s.maxExpiresAt}, ${s.accessExpiresAt})`;
    },
    async insertRefreshToken(hash: Buffer, sessionId: string, expiresAt: Date): Promise<void> {
      await q`insert into refresh_tokens (token_hash, session_id, expires_at) values (${hash}, ${sessionId}, ${expiresAt})`;
    },
    /** The refresh token and its session, both locked, so two refreshes of one token run one after another. */
    async refreshTokenForUpdate(hash: Buffer): Promise<RefreshRow | undefined> {
      const [row] = await q<RefreshRow[]>`
        select r.session_id as "sessionId", s.tenant_id as "tenantId", s.user_id as "userId",
          r.expires_at as "expiresAt", r.used_at as "usedAt", s.revoked_at as "revokedAt",
          s.max_expires_at as "maxExpiresAt"
        from refresh_tokens r join sessions s on s.id = r.session_id
        where r.token_hash = ${hash} for update of r, s`;
      return row;
    },
    async spendRefreshToken(hash: Buffer): Promise<void> {
      await q`update refresh_tokens set used_at = now() where token_hash = ${hash}`;
    },
    async touchSession(id: string, expiresAt: Date, accessExpiresAt: Date): Promise<void> {
      await q`update sessions set last_used_at = now(), expires_at = ${expiresAt},
        access_expires_at = greatest(access_expires_at, ${accessExpiresAt}) where id = ${id}`;
    },
    /** The session if it is the user's in the tenant (revoked or not). */
    async session(tenantId: string, userId: string, id: string): Promise<SessionRow | undefined> {
      const [row] = await q<SessionRow[]>`select ${sessionColumns(q)} from sessions
        where id = ${id} and tenant_id = ${tenantId} and user_id = ${userId}`;
      return row;
    },
    /** Revokes an active session; the row when this call revoked it, undefined when it already was. */
    async revokeSession(id: string, reason: number): Promise<SessionRow | undefined> {
      const [row] = await q<SessionRow[]>`update sessions set revoked_at = now(), revoke_reason = ${reason}
        where id = ${id} and revoked_at is null returning ${sessionColumns(q)}`;
      return row;
    },
    /** The user's sessions in the tenant that are neither revoked nor expired, newest first. */
    async activeSessions(tenantId: string, userId: string): Promise<SessionRow[]> {
      return q<SessionRow[]>`select ${sessionColumns(q)} from sessions
        where tenant_id = ${tenantId} and user_id = ${userId} and revoked_at is null and expires_at > now()
        order by created_at desc, id desc`;
    },
    /** The throttle rows of keys: failure counts and locks (locked when lockedUntil is in the future). */
    async throttleRows(
      keys: readonly string[],
    ): Promise<{ key: string; failures: number; lockedUntil: Date | null }[]> {
      return q<{ key: string; failures: number; lockedUntil: Date | null }[]>`
        select key, failures, case when locked_until > now() then locked_until end as "lockedUntil"
        from login_throttle where key = any(${keys as string[]})`;
    },
    /**
     * Counts a failure for key (restarting the count after windowMs without failures) and, from the
     * maxFailures-th on, locks it for lockMs doubling with each further failure, at most maxLockMs.
     */
    async recordFailure(
      key: string,
      p: { maxFailures: number; windowMs: number; lockMs: number; maxLockMs: number },
    ) {
      await q`insert into login_throttle as t (key, failures, last_failure_at) values (${key}, 1, now())
        on conflict (key) do update set
          failures = case when t.last_failure_at < now() - make_interval(secs => ${p.windowMs / 1000}) then 1
                          else t.failures + 1 end,
          last_failure_at = now()`;
      await q`update login_throttle set locked_until = now() + make_interval(secs =>
          least(${p.maxLockMs / 1000}::float8, ${p.lockMs / 1000}::float8 * power(2, least(failures - ${p.maxFailures}, 30))))
        where key = ${key} and failures >= ${p.maxFailures}`;
    },
    async clearFailures(key: string): Promise<void> {
      await q`delete from login_throttle where key = ${key}`;
    },
    /** Takes the key-rotation lock until the transaction ends (call inside one). */
    async lockSigningKeys(): Promise<void> {
      await q`select pg_advisory_xact_lock(hashtext('trellis.auth.signing_keys')::bigint)`;
    },
    async signingKeys(): Promise<SigningKeyRow[]> {
      return q<SigningKeyRow[]>`select kid, alg, public_jwk as "publicJwk", private_key as "privateKey",
        created_at as "createdAt", activates_at as "activatesAt", superseded_at as "supersededAt"
        from signing_keys order by activates_at desc, kid`;
    },
    async insertSigningKey(row: SigningKeyRow): Promise<void> {
      await q`insert into signing_keys (kid, alg, public_jwk, private_key, created_at, activates_at)
        values (${row.kid}, ${row.alg}, ${q.json(row.publicJwk as never)}, ${row.privateKey}, ${row.createdAt},
                ${row.activatesAt})`;
    },
    async supersedeSigningKeys(exceptKid: string, at: Date): Promise<void> {
      await q`update signing_keys set superseded_at = ${at} where kid <> ${exceptKid} and superseded_at is null`;
    },
    /** Deletes keys superseded before cutoff (their tokens have all expired). */
    async deleteSigningKeys(supersededBefore: Date): Promise<string[]> {
      const rows = await q<
        { kid: string }[]
      >`delete from signing_keys where superseded_at < ${supersededBefore}
        returning kid`;
      return rows.map((r) => r.kid);
    },
    /** Deletes what no longer matters: old throttle counters, spent tokens of ended sessions. */
    async purge(throttleWindowMs: number): Promise<void> {
      await q`delete from login_throttle where last_failure_at < now() - make_interval(secs => ${throttleWindowMs / 1000})
        and (locked_until is null or locked_until < now())`;
      await q`delete from sessions where (revoked_at is not null or expires_at < now())
        and greatest(coalesce(revoked_at, expires_at), access_expires_at) < now() - interval '30 days'`;
    },
  };
}
