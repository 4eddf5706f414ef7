/** Every permission the contracts name in their `(trellis.common.v1.access).permission` options. */
export const permissionCatalog = [
  "auth.members.invite",
  "auth.members.read",
  "auth.roles.manage",
  "auth.roles.read",
  "analytics.events.write",
  "analytics.metrics.read",
  "analytics.reports.read",
  "billing.clock.advance",
  "billing.invoices.manage",
  "billing.invoices.read",
  "billing.payment_methods.manage",
  "billing.payment_methods.read",
  "billing.plans.manage",
  "billing.subscriptions.manage",
  "billing.subscriptions.read",
  "billing.usage.write",
  "core.inventory.write",
  "core.orders.fulfill",
  "core.orders.read",
  "core.orders.write",
  "core.products.read",
  "core.products.write",
  "testing.whoami",
] as const;

/** Permissions that only test and demo setups grant (billing.proto: "only test and demo roles carry"). */
export const testOnlyPermissions: readonly string[] = ["billing.clock.advance", "testing.whoami"];

/** Names of the built-in roles, in the order ListRoles answers them. */
export const builtInRoleNames = ["owner", "admin", "member", "billing_admin", "viewer"] as const;

const everyday = [
  "auth.members.read",
  "auth.roles.read",
  "analytics.events.write",
  "analytics.metrics.read",
  "analytics.reports.read",
  "billing.invoices.read",
  "billing.subscriptions.read",
  "core.inventory.write",
  "core.orders.fulfill",
  "core.orders.read",
  "core.orders.write",
  "core.products.read",
  "core.products.write",
];

const billing = [
  "auth.members.read",
  "billing.invoices.read",
  "billing.payment_methods.manage",
  "billing.payment_methods.read",
  "billing.subscriptions.manage",
  "billing.subscriptions.read",
  "billing.usage.write",
];

const readOnly = [
  "auth.members.read",
  "auth.roles.read",
  "analytics.metrics.read",
  "analytics.reports.read",
  "billing.invoices.read",
  "billing.subscriptions.read",
  "core.orders.read",
  "core.products.read",
];

/** A role as auth keeps it: a name and the permissions it grants. */
export interface RoleDef {
  readonly name: string;
  readonly permissions: readonly string[];
  readonly builtIn: boolean;
}

/**
 * The built-in roles. owner holds every permission of the catalog, admin all but the test-only
 * ones; with grantTestPermissions (test and demo setups) owner and admin also hold those.
 */
export function builtInRoles(grantTestPermissions: boolean): ReadonlyMap<string, RoleDef> {
  const all = permissionCatalog.filter((p) => grantTestPermissions || !testOnlyPermissions.includes(p));
  const defs: Record<(typeof builtInRoleNames)[number], readonly string[]> = {
    owner: all,
    admin: all,
    member: everyday,
    billing_admin: billing,
    viewer: readOnly,
  };
  return new Map(
    builtInRoleNames.map((name) => [name, { name, permissions: [...defs[name]].sort(), builtIn: true }]),
  );
}

/** The union of the permissions of the named roles, sorted; unknown names grant nothing. */
export function permissionsOf(roleNames: readonly string[], roles: ReadonlyMap<string, RoleDef>): string[] {
  const out = new Set<string>();
  for (const name of roleNames) for (const p of roles.get(name)?.permissions ?? []) out.add(p);
  return [...out].sort();
}
