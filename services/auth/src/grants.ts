import { Code, ConnectError } from "@connectrpc/connect";
import { builtInRoles, permissionsOf, type RoleDef } from "./permissions.ts";
import type { Queries } from "./store.ts";

/** A member's live roles and permissions in a tenant. */
export interface Grant {
  readonly roles: string[];
  readonly permissions: string[];
}

/** Resolves roles to permissions per tenant: the built-in roles plus the tenant's custom ones. */
export interface Grants {
  /** The built-in roles. */
  readonly builtIns: ReadonlyMap<string, RoleDef>;
  /** Every role of the tenant, built-in first, then custom by name. */
  roles(q: Queries, tenantId: string): Promise<Map<string, RoleDef>>;
  /** The member's roles and permissions now, or undefined when the user is not a member. */
  of(q: Queries, tenantId: string, userId: string): Promise<Grant | undefined>;
  /**
   * Throws permission_denied unless the member holds permission now (tokens may be up to 15 minutes
   * old, and a demoted admin must not keep managing roles).
   */
  require(q: Queries, tenantId: string, userId: string, permission: string): Promise<Grant>;
}

/** Creates the resolver; grantTestPermissions adds the test-only permissions to owner and admin. */
export function createGrants(grantTestPermissions: boolean): Grants {
  const builtIns = builtInRoles(grantTestPermissions);
  const roles: Grants["roles"] = async (q, tenantId) => {
    const all = new Map(builtIns);
    for (const r of await q.customRoles(tenantId)) {
      all.set(r.name, { name: r.name, permissions: [...r.permissions].sort(), builtIn: false });
    }
    return all;
  };
  const of: Grants["of"] = async (q, tenantId, userId) => {
    const names = await q.rolesOf(tenantId, userId);
    if (!names) return undefined;
    const defs = names.every((n) => builtIns.has(n)) ? builtIns : await roles(q, tenantId);
    return { roles: names, permissions: permissionsOf(names, defs) };
  };
  return {
    builtIns,
    roles,
    of,
    async require(q, tenantId, userId, permission) {
      const grant = await of(q, tenantId, userId);
      if (!grant?.permissions.includes(permission))
        throw new ConnectError("permission denied", Code.PermissionDenied);
      return grant;
    },
  };
}
