import type postgres from "postgres";

/** A query handle: the pool or a transaction. */
export type Q = postgres.ISql<{ bigint: bigint }>;

/** A user as sign-in sees it. */
export interface UserRow {
  readonly id: string;
  readonly email: string;
  readonly passwordHash: string;
  /** Sealed TOTP secret when MFA is on. */
  readonly totpSecret: string | null;
  readonly totpPendingSecret: string | null;
}

/** A member of a tenant. */
export interface MemberRow {
  readonly seq: bigint;
  readonly userId: string;
  readonly email: string;
  readonly roles: string[];
  readonly joinedAt: Date;
}

/** A custom role. */
export interface CustomRoleRow {
  readonly name: string;
  readonly permissions: readonly string[];
}

/** An invite, without its token. */
export interface InviteRow {
  readonly id: string;
  readonly tenantId: string;
  readonly email: string;
  readonly roles: string[];
  readonly expiresAt: Date;
  readonly acceptedAt: Date | null;
}

const uniqueViolation = "23505";

/** True when error is PostgreSQL's unique_violation. */
export function isUniqueViolation(error: unknown): boolean {
  return (error as { code?: unknown }).code === uniqueViolation;
}

const userColumns = (q: Q) =>
  q`id, email, password_hash as "passwordHash", totp_secret as "totpSecret", totp_pending_secret as "totpPendingSecret"`;

/** SQL for tenants, users, memberships, roles, invites and MFA state; tenant rows always filtered by tenant. */
export function accountQueries(q: Q) {
  const member = async (tenantId: string, userId: string): Promise<MemberRow | undefined> => {
    const [row] = await q<MemberRow[]>`
      select m.seq, m.user_id as "userId", u.email, m.joined_at as "joinedAt",
        coalesce((select array_agg(r.role order by r.role) from member_roles r
                  where r.tenant_id = m.tenant_id and r.user_id = m.user_id), '{}') as roles
      from memberships m join users u on u.id = m.user_id
      where m.tenant_id = ${tenantId} and m.user_id = ${userId}`;
    return row;
  };

  return {
    async insertTenant(id: string, name: string): Promise<void> {
      await q`insert into tenants (id, name) values (${id}, ${name})`;
    },
    /** Inserts a user; false when the email is taken. */
    async insertUser(id: string, email: string, passwordHash: string): Promise<boolean> {
      const rows =
        await q`insert into users (id, email, password_hash) values (${id}, ${email}, ${passwordHash})
        on conflict (email) do nothing returning id`;
      return rows.length === 1;
    },
    async userByEmail(email: string): Promise<UserRow | undefined> {
      const [row] = await q<UserRow[]>`select ${userColumns(q)} from users where email = ${email}`;
      return row;
    },
    async userById(id: string, forUpdate = false): Promise<UserRow | undefined> {
      const [row] = forUpdate
        ? await q<UserRow[]>`select ${userColumns(q)} from users where id = ${id} for update`
        : await q<UserRow[]>`select ${userColumns(q)} from users where id = ${id}`;
      return row;
    },
    async addMembership(tenantId: string, userId: string, roles: readonly string[]): Promise<void> {
      await q`insert into memberships (tenant_id, user_id) values (${tenantId}, ${userId})`;
      for (const role of roles) {
        await q`insert into member_roles (tenant_id, user_id, role) values (${tenantId}, ${userId}, ${role})`;
      }
    },
    member,
    /** tenantId when the user is a member of it; with "" the tenant the user joined first; else undefined. */
    async memberTenant(userId: string, tenantId: string): Promise<string | undefined> {
      const [row] = tenantId
        ? await q<{ tenantId: string }[]>`select tenant_id as "tenantId" from memberships
            where user_id = ${userId} and tenant_id = ${tenantId}`
        : await q<{ tenantId: string }[]>`select tenant_id as "tenantId" from memberships
            where user_id = ${userId} order by seq limit 1`;
      return row?.tenantId;
    },
    /** Role names of a member, or undefined when the user is not a member of the tenant. */
    async rolesOf(tenantId: string, userId: string): Promise<string[] | undefined> {
      const [row] = await q<{ roles: string[] }[]>`
        select coalesce((select array_agg(role order by role) from member_roles r
                         where r.tenant_id = m.tenant_id and r.user_id = m.user_id), '{}') as roles
        from memberships m where m.tenant_id = ${tenantId} and m.user_id = ${userId}`;
      return row?.roles;
    },
    async listMembers(tenantId: string, afterSeq: bigint, limit: number): Promise<MemberRow[]> {
      return q<MemberRow[]>`
        select m.seq, m.user_id as "userId", u.email, m.joined_at as "joinedAt",
          coalesce((select array_agg(r.role order by r.role) from member_roles r
                    where r.tenant_id = m.tenant_id and r.user_id = m.user_id), '{}') as roles
        from memberships m join users u on u.id = m.user_id
        where m.tenant_id = ${tenantId} and m.seq > ${afterSeq.toString()}
        order by m.seq limit ${limit}`;
    },
    async isMemberByEmail(tenantId: string, email: string): Promise<boolean> {
      const rows = await q`select 1 from memberships m join users u on u.id = m.user_id
        where m.tenant_id = ${tenantId} and u.email = ${email}`;
      return rows.length > 0;
    },
    async customRoles(tenantId: string): Promise<CustomRoleRow[]> {
      return q<
        CustomRoleRow[]
      >`select name, permissions from custom_roles where tenant_id = ${tenantId} order by name`;
    },
    /** Inserts a custom role; false when the name is taken in the tenant. */
    async insertCustomRole(tenantId: string, role: CustomRoleRow, createdBy: string): Promise<boolean> {
      const rows = await q`insert into custom_roles (tenant_id, name, permissions, created_by)
        values (${tenantId}, ${role.name}, ${role.permissions as string[]}, ${createdBy})
        on conflict (tenant_id, name) do nothing returning name`;
      return rows.length === 1;
    },
    /** Locks the member's row so concurrent role changes of one member apply one after another. */
    async lockMember(tenantId: string, userId: string): Promise<boolean> {
      const rows =
        await q`select 1 from memberships where tenant_id = ${tenantId} and user_id = ${userId} for update`;
      return rows.length === 1;
    },
    /** Locks the tenant's row: role changes that count owners serialise on it. */
    async lockTenant(tenantId: string): Promise<void> {
      await q`select 1 from tenants where id = ${tenantId} for update`;
    },
    async countRoleHolders(tenantId: string, role: string): Promise<number> {
      const [row] = await q<{ n: number }[]>`
        select count(*)::int as n from member_roles where tenant_id = ${tenantId} and role = ${role}`;
      return row?.n ?? 0;
    },
    /** Grants a role; false when the member already had it. */
    async grantRole(tenantId: string, userId: string, role: string): Promise<boolean> {
      const rows =
        await q`insert into member_roles (tenant_id, user_id, role) values (${tenantId}, ${userId}, ${role})
        on conflict do nothing returning role`;
      return rows.length === 1;
    },
    /** Takes a role away; false when the member did not have it. */
    async dropRole(tenantId: string, userId: string, role: string): Promise<boolean> {
      const rows = await q`delete from member_roles
        where tenant_id = ${tenantId} and user_id = ${userId} and role = ${role} returning role`;
      return rows.length === 1;
    },
    async insertInvite(
      invite: Omit<InviteRow, "acceptedAt">,
      tokenHash: Buffer,
      invitedBy: string,
    ): Promise<void> {
      await q`insert into invites (id, tenant_id, email, roles, token_hash, invited_by, expires_at)
        values (${invite.id}, ${invite.tenantId}, ${invite.email}, ${invite.roles}, ${tokenHash}, ${invitedBy},
                ${invite.expiresAt})`;
    },
    /** The unused, unexpired invite with this token hash (locked when forUpdate). */
    async openInvite(tokenHash: Buffer, forUpdate = false): Promise<InviteRow | undefined> {
      const [row] = forUpdate
        ? await q<InviteRow[]>`select id, tenant_id as "tenantId", email, roles, expires_at as "expiresAt",
            accepted_at as "acceptedAt" from invites
            where token_hash = ${tokenHash} and accepted_at is null and expires_at > now() for update`
        : await q<InviteRow[]>`select id, tenant_id as "tenantId", email, roles, expires_at as "expiresAt",
            accepted_at as "acceptedAt" from invites
            where token_hash = ${tokenHash} and accepted_at is null and expires_at > now()`;
      return row;
    },
    async acceptInvite(id: string, userId: string): Promise<void> {
      await q`update invites set accepted_at = now(), accepted_by = ${userId} where id = ${id}`;
    },
    async setPendingTotp(userId: string, sealed: string): Promise<void> {
      await q`update users set totp_pending_secret = ${sealed} where id = ${userId}`;
    },
    /** Turns MFA on with the pending secret, recording step as the last one used. */
    async enableTotp(userId: string, step: number): Promise<void> {
      await q`update users set totp_secret = totp_pending_secret, totp_pending_secret = null,
        totp_last_step = ${step} where id = ${userId}`;
    },
    async disableTotp(userId: string): Promise<void> {
      await q`update users set totp_secret = null, totp_pending_secret = null, totp_last_step = null
        where id = ${userId}`;
      await q`delete from recovery_codes where user_id = ${userId}`;
    },
    /** Records step as used; false when it or a later step was used already (a replayed code). */
    async useTotpStep(userId: string, step: number): Promise<boolean> {
      const rows = await q`update users set totp_last_step = ${step}
        where id = ${userId} and totp_secret is not null and (totp_last_step is null or totp_last_step < ${step})
        returning id`;
      return rows.length === 1;
    },
    async replaceRecoveryCodes(userId: string, hashes: readonly Buffer[]): Promise<void> {
      await q`delete from recovery_codes where user_id = ${userId}`;
      for (const hash of hashes)
        await q`insert into recovery_codes (user_id, code_hash) values (${userId}, ${hash})`;
    },
    /** Spends a recovery code; false when it is unknown or already spent. */
    async useRecoveryCode(userId: string, hash: Buffer): Promise<boolean> {
      const rows = await q`update recovery_codes set used_at = now()
        where user_id = ${userId} and code_hash = ${hash} and used_at is null returning user_id`;
      return rows.length === 1;
    },
  };
}
