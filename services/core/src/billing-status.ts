import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "@trellis/kit/logger.js";
import type { BillingPort } from "./billing.js";
import type { BillingFacts, SubscriptionState } from "./rules.js";
import { getTenantBilling, type Sql, storeTenantBilling, type TenantBillingRow } from "./store.js";

/** Where the business rules get a tenant's billing status from. */
export interface BillingStatusSource {
  /** The tenant's status: cached in core's database, fetched from billing when stale or missing. */
  get(tenantId: string): Promise<BillingFacts>;
}

function factsOf(row: TenantBillingRow): BillingFacts {
  const max =
    row.max_order_minor !== null && row.max_order_currency
      ? { amountMinor: row.max_order_minor, currency: row.max_order_currency }
      : undefined;
  return {
    subscription: row.subscription_status as SubscriptionState,
    planId: row.plan_id,
    ...(max ? { maxOrderValue: max } : {}),
  };
}

/**
 * A cache of GetTenantBillingStatus in core's database, shared by every core instance: an answer
 * is kept for ttlMs; billing's subscription events mark it stale (and set the new status at once).
 * When billing cannot answer, a cached row is used however old; with none, unavailable.
 */
export function createBillingStatusCache(options: {
  sql: Sql;
  billing: BillingPort;
  ttlMs: number;
  logger: Pick<Logger, "warn">;
  timeoutMs?: number;
}): BillingStatusSource {
  const { sql, billing, ttlMs, logger } = options;
  return {
    async get(tenantId) {
      const row = await getTenantBilling(sql, tenantId);
      const age = row?.fetched_at ? Date.now() - row.fetched_at.getTime() : Number.POSITIVE_INFINITY;
      if (row && !row.stale && age < ttlMs) return factsOf(row);
      let facts: BillingFacts;
      try {
        facts = await billing.status(tenantId, { timeoutMs: options.timeoutMs ?? 2000 });
      } catch (error) {
        if (row) {
          logger.warn({ err: error, tenantId }, "billing status unavailable; using the cached one");
          return factsOf(row);
        }
        throw new ConnectError("billing status unavailable", Code.Unavailable, undefined, undefined, error);
      }
      await storeTenantBilling(
        sql,
        {
          tenant_id: tenantId,
          subscription_status: facts.subscription,
          plan_id: facts.planId,
          max_order_minor: facts.maxOrderValue?.amountMinor ?? null,
          max_order_currency: facts.maxOrderValue?.currency ?? null,
        },
        row?.version,
      );
      return facts;
    },
  };
}
