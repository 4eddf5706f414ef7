import type { Interval } from "./money.ts";
import type { Claim, MeteredComponentRow, PaymentMethodRow, PlanRow, Q } from "./store-types.ts";

interface PlanSql {
  id: string;
  name: string;
  description: string;
  currency: string;
  trial_days: number;
  max_order_value_minor: bigint | null;
  created_at: Date;
  seq: bigint;
  prices: Array<{ interval: Interval; amount_minor: string }>;
  components: Array<{ metric: string; unit_price_minor: string; included_quantity: string }>;
}

function toPlan(row: PlanSql): PlanRow {
  return {
    id: row.id,
    name: row.name,
    description: row.description,
    currency: row.currency,
    trialDays: row.trial_days,
    maxOrderValueMinor: row.max_order_value_minor,
    createdAt: row.created_at,
    prices: row.prices.map((p) => ({ interval: p.interval, amountMinor: BigInt(p.amount_minor) })),
    components: row.components.map((c) => ({
      metric: c.metric,
      unitPriceMinor: BigInt(c.unit_price_minor),
      includedQuantity: BigInt(c.included_quantity),
    })),
  };
}

/** Catalog, customer, clock, payment method and idempotency-key queries. */
export function catalogQueries(q: Q) {
  // Amounts travel through JSON as text: a JSON number would lose precision past 2^53.
  const planSelect = () => q`
    select p.id, p.name, p.description, p.currency, p.trial_days, p.max_order_value_minor, p.created_at, p.seq,
      coalesce((select json_agg(json_build_object('interval', pp.interval, 'amount_minor', pp.amount_minor::text)
                order by pp.interval) from plan_prices pp where pp.plan_id = p.id), '[]') as prices,
      coalesce((select json_agg(json_build_object('metric', m.metric, 'unit_price_minor', m.unit_price_minor::text,
                'included_quantity', m.included_quantity::text) order by m.metric)
                from plan_metered_components m where m.plan_id = p.id), '[]') as components
    from plans p`;

  return {
    async insertPlan(plan: PlanRow): Promise<void> {
      await q`insert into plans (id, name, description, currency, trial_days, max_order_value_minor, created_at)
        values (${plan.id}, ${plan.name}, ${plan.description}, ${plan.currency}, ${plan.trialDays},
                ${plan.maxOrderValueMinor}, ${plan.createdAt})`;
      for (const price of plan.prices) {
        await q`insert into plan_prices (plan_id, interval, amount_minor)
          values (${plan.id}, ${price.interval}, ${price.amountMinor})`;
      }
      for (const c of plan.components) {
        await q`insert into plan_metered_components (plan_id, metric, unit_price_minor, included_quantity)
          values (${plan.id}, ${c.metric}, ${c.unitPriceMinor}, ${c.includedQuantity})`;
      }
    },

    async getPlan(id: string): Promise<PlanRow | undefined> {
      const [row] = await q<PlanSql[]>`${planSelect()} where p.id = ${id}`;
      return row && toPlan(row);
    },

    /** Active plans after seq, oldest first. */
    async listPlans(afterSeq: bigint, limit: number): Promise<(PlanRow & { seq: bigint })[]> {
      const rows = await q<
        PlanSql[]
      >`${planSelect()} where p.active and p.seq > ${afterSeq} order by p.seq limit ${limit}`;
      return rows.map((r) => ({ ...toPlan(r), seq: r.seq }));
    },

    async meteredComponent(planId: string, metric: string): Promise<MeteredComponentRow | undefined> {
      const [row] = await q<{ unit_price_minor: bigint; included_quantity: bigint }[]>`
        select unit_price_minor, included_quantity from plan_metered_components
        where plan_id = ${planId} and metric = ${metric}`;
      return row && { metric, unitPriceMinor: row.unit_price_minor, includedQuantity: row.included_quantity };
    },

    /** Creates the customer if needed and locks its row until the transaction ends: the tenant's mutex. */
    async lockCustomer(tenantId: string): Promise<{ defaultPaymentMethodId: string | null }> {
      const [row] = await q<{ default_payment_method_id: string | null }[]>`
        insert into customers (tenant_id) values (${tenantId})
        on conflict (tenant_id) do update set tenant_id = excluded.tenant_id
        returning default_payment_method_id`;
      return { defaultPaymentMethodId: row?.default_payment_method_id ?? null };
    },

    /** Creates or renames a customer (the tenant.created consumer). */
    async upsertCustomer(tenantId: string, name: string): Promise<void> {
      await q`insert into customers (tenant_id, name) values (${tenantId}, ${name})
        on conflict (tenant_id) do update set name = excluded.name`;
    },

    async customerName(tenantId: string): Promise<string> {
      const [row] = await q<{ name: string }[]>`select name from customers where tenant_id = ${tenantId}`;
      return row?.name ?? "";
    },

    async customerExists(tenantId: string): Promise<boolean> {
      const rows = await q`select 1 from customers where tenant_id = ${tenantId}`;
      return rows.length > 0;
    },

    /** The tenant's clock setting (null: it follows the wall clock). */
    async clockSetting(tenantId: string): Promise<Date | null> {
      const [row] = await q<
        { now_at: Date }[]
      >`select now_at from billing_clocks where tenant_id = ${tenantId}`;
      return row?.now_at ?? null;
    },

    /** Moves the tenant's clock forward to at least `to` (never back). */
    async moveClock(tenantId: string, to: Date): Promise<void> {
      await q`insert into billing_clocks (tenant_id, now_at) values (${tenantId}, ${to})
        on conflict (tenant_id) do update set now_at = greatest(billing_clocks.now_at, excluded.now_at)`;
    },

    async insertPaymentMethod(pm: Omit<PaymentMethodRow, "is_default">, makeDefault: boolean): Promise<void> {
      await q`insert into payment_methods (id, tenant_id, provider_ref, brand, last4, exp_month, exp_year, created_at)
        values (${pm.id}, ${pm.tenant_id}, ${pm.provider_ref}, ${pm.brand}, ${pm.last4}, ${pm.exp_month},
                ${pm.exp_year}, ${pm.created_at})`;
      if (makeDefault) {
        await q`update customers set default_payment_method_id = ${pm.id} where tenant_id = ${pm.tenant_id}`;
      }
    },

    async getPaymentMethod(tenantId: string, id: string): Promise<PaymentMethodRow | undefined> {
      const [row] = await q<PaymentMethodRow[]>`
        select pm.*, (c.default_payment_method_id = pm.id) as is_default
        from payment_methods pm join customers c using (tenant_id)
        where pm.tenant_id = ${tenantId} and pm.id = ${id}`;
      return row;
    },

    async listPaymentMethods(tenantId: string, afterSeq: bigint, limit: number) {
      return q<(PaymentMethodRow & { seq: bigint })[]>`
        select pm.*, coalesce(c.default_payment_method_id = pm.id, false) as is_default
        from payment_methods pm join customers c using (tenant_id)
        where pm.tenant_id = ${tenantId} and pm.seq > ${afterSeq} order by pm.seq limit ${limit}`;
    },

    /**
     * Claims an idempotency key for this transaction. A live key of a committed request answers
     * replay (same hash) or mismatch; an expired one is taken over. A concurrent holder makes this
     * wait until it commits or rolls back.
     */
    async claimKey(
      tenantId: string,
      key: string,
      method: string,
      hash: Uint8Array,
      ttlMs: number,
    ): Promise<{ claim: Claim; clockAt: Date | null }> {
      const expires = new Date(Date.now() + ttlMs);
      // One round trip: the claim, and the tenant's clock setting that every mutation needs.
      const [first] = await q<{ claimed: boolean; clock_at: Date | null }[]>`
        with claimed as (
          insert into idempotency_keys (tenant_id, key, method, request_hash, expires_at)
          values (${tenantId}, ${key}, ${method}, ${hash}, ${expires})
          on conflict (tenant_id, key) do update
            set method = excluded.method, request_hash = excluded.request_hash, response = null,
                created_at = now(), expires_at = excluded.expires_at
            where idempotency_keys.expires_at <= now()
          returning 1)
        select exists (select 1 from claimed) as claimed,
          (select now_at from billing_clocks where tenant_id = ${tenantId}) as clock_at`;
      const clockAt = first?.clock_at ?? null;
      if (first?.claimed) return { claim: { kind: "claimed" }, clockAt };
      const [row] = await q<{ request_hash: Uint8Array; response: Uint8Array | null }[]>`
        select request_hash, response from idempotency_keys where tenant_id = ${tenantId} and key = ${key}`;
      if (!row) return { claim: { kind: "in_progress" }, clockAt };
      if (Buffer.compare(Buffer.from(row.request_hash), Buffer.from(hash)) !== 0)
        return { claim: { kind: "mismatch" }, clockAt };
      return {
        claim: row.response ? { kind: "replay", response: row.response } : { kind: "in_progress" },
        clockAt,
      };
    },

    /** Stores the response of a claimed key (same transaction as the claim). */
    async completeKey(tenantId: string, key: string, response: Uint8Array): Promise<void> {
      await q`update idempotency_keys set response = ${response} where tenant_id = ${tenantId} and key = ${key}`;
    },

    /** Deletes expired keys; returns how many. */
    async purgeExpiredKeys(): Promise<number> {
      const rows = await q`delete from idempotency_keys where expires_at <= now() returning 1`;
      return rows.length;
    },
  };
}
