import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { AuthService } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import {
  MemberRoleChangedSchema,
  RoleChange,
  RoleCreatedSchema,
} from "@trellis/gen/trellis/auth/v1/events_pb.js";
import { requirePrincipal } from "@trellis/kit/access.js";
import type { Grant } from "./grants.ts";
import { permissionCatalog, type RoleDef } from "./permissions.ts";
import { notFound } from "./request.ts";
import type { AuthDeps } from "./sign-in.ts";
import type { MemberRow, Queries, Tx } from "./store.ts";

/** The Member message of a row. */
export function memberMessage(m: MemberRow) {
  return { userId: m.userId, email: m.email, roles: m.roles, joinedAt: timestampFromDate(m.joinedAt) };
}

function roleMessage(r: RoleDef) {
  return { name: r.name, permissions: [...r.permissions], builtIn: r.builtIn };
}

/**
 * Throws permission_denied unless actor may hand out role: the owner role only by an owner, and
 * no role granting a permission the actor lacks (an admin cannot mint themselves more power).
 */
export function checkCanGrant(actor: Grant, role: RoleDef): void {
  const mayGrant =
    (role.name !== "owner" || actor.roles.includes("owner")) &&
    role.permissions.every((perm) => actor.permissions.includes(perm));
  if (!mayGrant) throw new ConnectError(`may not grant role ${role.name}`, Code.PermissionDenied);
}

async function memberOrNotFound(q: Queries, tenantId: string, userId: string): Promise<MemberRow> {
  const member = await q.member(tenantId, userId);
  if (!member) throw notFound("member");
  return member;
}

/** CreateRole, ListRoles, AssignRole, RevokeRole and CheckPermission. */
export function createRoleHandlers(
  deps: AuthDeps,
): Pick<
  ServiceImpl<typeof AuthService>,
  "createRole" | "listRoles" | "assignRole" | "revokeRole" | "checkPermission"
> {
  const { store, grants } = deps;
  const manager = async (ctx: HandlerContext) => {
    const p = requirePrincipal(ctx);
    return { p, actor: await grants.require(store, p.tenantId, p.userId, "auth.roles.manage") };
  };

  const changed = async (
    tx: Tx,
    m: MemberRow,
    role: string,
    change: RoleChange,
    by: string,
    tenantId: string,
  ) => {
    await tx.emit(MemberRoleChangedSchema, {
      tenantId,
      userId: m.userId,
      role,
      change,
      roles: m.roles,
      changedByUserId: by,
      occurredAt: timestampFromDate(new Date()),
    });
  };

  return {
    async createRole(req, ctx) {
      const { p, actor } = await manager(ctx);
      if (grants.builtIns.has(req.name)) throw new ConnectError("role exists", Code.AlreadyExists);
      const unknown = req.permissions.filter(
        (perm) => !(permissionCatalog as readonly string[]).includes(perm),
      );
      if (unknown.length > 0) {
        throw new ConnectError(`unknown permissions: ${unknown.join(", ")}`, Code.InvalidArgument);
      }
      const role: RoleDef = { name: req.name, permissions: [...req.permissions].sort(), builtIn: false };
      checkCanGrant(actor, role);
      await store.transaction(async (tx) => {
        if (!(await tx.insertCustomRole(p.tenantId, role, p.userId))) {
          throw new ConnectError("role exists", Code.AlreadyExists);
        }
        await tx.emit(RoleCreatedSchema, {
          tenantId: p.tenantId,
          role: role.name,
          permissions: [...role.permissions],
          createdByUserId: p.userId,
          occurredAt: timestampFromDate(new Date()),
        });
      });
      return { role: roleMessage(role) };
    },

    async listRoles(_req, ctx) {
      const p = requirePrincipal(ctx);
      const roles = await grants.roles(store, p.tenantId);
      return { roles: [...roles.values()].map(roleMessage) };
    },

    async assignRole(req, ctx) {
      const { p, actor } = await manager(ctx);
      const member = await store.transaction(async (tx) => {
        if (!(await tx.lockMember(p.tenantId, req.userId))) throw notFound("member");
        const role = (await grants.roles(tx, p.tenantId)).get(req.role);
        if (!role) throw notFound("role");
        checkCanGrant(actor, role);
        const granted = await tx.grantRole(p.tenantId, req.userId, req.role);
        const after = await memberOrNotFound(tx, p.tenantId, req.userId);
        if (granted) await changed(tx, after, req.role, RoleChange.ASSIGNED, p.userId, p.tenantId);
        return after;
      });
      return { member: memberMessage(member) };
    },

    async revokeRole(req, ctx) {
      const { p, actor } = await manager(ctx);
      const member = await store.transaction(async (tx) => {
        // Owner counting below must see every concurrent change of the tenant's owners.
        await tx.lockTenant(p.tenantId);
        const before = await memberOrNotFound(tx, p.tenantId, req.userId);
        if (!before.roles.includes(req.role)) return before;
        if (req.role === "owner") {
          if (!actor.roles.includes("owner"))
            throw new ConnectError("only an owner may", Code.PermissionDenied);
          if ((await tx.countRoleHolders(p.tenantId, "owner")) <= 1) {
            throw new ConnectError("a tenant keeps at least one owner", Code.FailedPrecondition);
          }
        }
        await tx.dropRole(p.tenantId, req.userId, req.role);
        const after = await memberOrNotFound(tx, p.tenantId, req.userId);
        await changed(tx, after, req.role, RoleChange.REVOKED, p.userId, p.tenantId);
        return after;
      });
      return { member: memberMessage(member) };
    },

    async checkPermission(req) {
      const grant = await grants.of(store, req.tenantId, req.userId);
      return { allowed: grant?.permissions.includes(req.permission) ?? false };
    },
  };
}
