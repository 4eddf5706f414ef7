import type {
  InvoiceLineRow,
  InvoiceRow,
  InvoiceStatusName,
  Q,
  SubscriptionRow,
  UsageRow,
} from "./store-types.ts";

/** Something due on a tenant's billing clock. */
export type DueItem =
  | { readonly kind: "retry"; readonly at: Date; readonly id: string }
  | { readonly kind: "period_end"; readonly at: Date; readonly id: string };

/** Subscription, invoice, usage and due-work queries. */
export function billingQueries(q: Q) {
  return {
    async insertSubscription(s: SubscriptionRow): Promise<void> {
      await q`insert into subscriptions (id, tenant_id, plan_id, interval, status, payment_method_id, trial_ends_at,
          billing_anchor, current_period_start, current_period_end, cancel_at_period_end, created_at)
        values (${s.id}, ${s.tenant_id}, ${s.plan_id}, ${s.interval}, ${s.status}, ${s.payment_method_id},
          ${s.trial_ends_at}, ${s.billing_anchor}, ${s.current_period_start}, ${s.current_period_end},
          ${s.cancel_at_period_end}, ${s.created_at})`;
    },

    /** A subscription of the tenant, locked for update when lock is set. */
    async getSubscription(tenantId: string, id: string, lock = false): Promise<SubscriptionRow | undefined> {
      const [row] = lock
        ? await q<
            SubscriptionRow[]
          >`select * from subscriptions where tenant_id = ${tenantId} and id = ${id} for update`
        : await q<
            SubscriptionRow[]
          >`select * from subscriptions where tenant_id = ${tenantId} and id = ${id}`;
      return row;
    },

    /** The tenant's subscription that has not ended, else its latest one. */
    async currentSubscription(tenantId: string): Promise<SubscriptionRow | undefined> {
      const [row] = await q<SubscriptionRow[]>`select * from subscriptions where tenant_id = ${tenantId}
        order by (status <> 'canceled') desc, seq desc limit 1`;
      return row;
    },

    async updateSubscription(s: SubscriptionRow): Promise<void> {
      await q`update subscriptions set plan_id = ${s.plan_id}, interval = ${s.interval}, status = ${s.status},
          payment_method_id = ${s.payment_method_id}, billing_anchor = ${s.billing_anchor},
          current_period_start = ${s.current_period_start}, current_period_end = ${s.current_period_end},
          cancel_at_period_end = ${s.cancel_at_period_end}, canceled_at = ${s.canceled_at},
          cancellation_reason = ${s.cancellation_reason}
        where id = ${s.id}`;
    },

    async draftInvoice(subscriptionId: string): Promise<InvoiceRow | undefined> {
      const [row] = await q<
        InvoiceRow[]
      >`select * from invoices where subscription_id = ${subscriptionId} and status = 'draft'`;
      return row;
    },

    async insertInvoice(i: InvoiceRow): Promise<void> {
      await q`insert into invoices (id, tenant_id, subscription_id, plan_id, status, currency, tax_rate_bps,
          period_start, period_end, created_at)
        values (${i.id}, ${i.tenant_id}, ${i.subscription_id}, ${i.plan_id}, 'draft', ${i.currency}, ${i.tax_rate_bps},
          ${i.period_start}, ${i.period_end}, ${i.created_at})`;
    },

    async insertLine(l: InvoiceLineRow): Promise<void> {
      await q`insert into invoice_lines (id, invoice_id, kind, description, plan_id, metric, quantity,
          unit_amount_minor, amount_minor, period_start, period_end)
        values (${l.id}, ${l.invoice_id}, ${l.kind}, ${l.description}, ${l.plan_id}, ${l.metric}, ${l.quantity},
          ${l.unit_amount_minor}, ${l.amount_minor}, ${l.period_start}, ${l.period_end})`;
    },

    async linesOf(invoiceIds: readonly string[]): Promise<InvoiceLineRow[]> {
      if (invoiceIds.length === 0) return [];
      return q<
        InvoiceLineRow[]
      >`select * from invoice_lines where invoice_id = any(${invoiceIds as string[]}::text[])
        order by seq`;
    },

    async deleteDraft(invoiceId: string): Promise<void> {
      await q`delete from invoice_lines where invoice_id = ${invoiceId}`;
      await q`delete from invoices where id = ${invoiceId} and status = 'draft'`;
    },

    async getInvoice(tenantId: string, id: string, lock = false): Promise<InvoiceRow | undefined> {
      const [row] = lock
        ? await q<
            InvoiceRow[]
          >`select * from invoices where tenant_id = ${tenantId} and id = ${id} for update`
        : await q<InvoiceRow[]>`select * from invoices where tenant_id = ${tenantId} and id = ${id}`;
      return row;
    },

    /** The tenant's invoices before seq (0n: from the newest), newest first. */
    async listInvoices(tenantId: string, status: InvoiceStatusName | null, beforeSeq: bigint, limit: number) {
      const before = beforeSeq > 0n ? beforeSeq : 9_223_372_036_854_775_807n;
      return status
        ? q<(InvoiceRow & { seq: bigint })[]>`select * from invoices where tenant_id = ${tenantId}
            and status = ${status} and seq < ${before} order by seq desc limit ${limit}`
        : q<(InvoiceRow & { seq: bigint })[]>`select * from invoices where tenant_id = ${tenantId}
            and seq < ${before} order by seq desc limit ${limit}`;
    },

    /**
     * Finalizes a draft (billed to invoice.plan_id): totals from its lines, tax at rateBps, and the tenant's next number. The
     * counter row is locked FOR UPDATE until the transaction ends, so concurrent finalizations
     * queue, and a rollback gives the number back: numbers stay gap-free and unique.
     */
    async finalizeInvoice(
      invoice: InvoiceRow,
      at: Date,
      rateBps: number,
      taxOf: (subtotal: bigint) => bigint,
    ) {
      const [sum] = await q<{ subtotal: bigint }[]>`
        select coalesce(sum(amount_minor), 0)::bigint as subtotal from invoice_lines where invoice_id = ${invoice.id}`;
      const subtotal = sum?.subtotal ?? 0n;
      const tax = taxOf(subtotal);
      await q`insert into invoice_counters (tenant_id) values (${invoice.tenant_id}) on conflict do nothing`;
      const [counter] = await q<{ last_number: bigint }[]>`
        select last_number from invoice_counters where tenant_id = ${invoice.tenant_id} for update`;
      const number = (counter?.last_number ?? 0n) + 1n;
      await q`update invoice_counters set last_number = ${number} where tenant_id = ${invoice.tenant_id}`;
      const [row] = await q<
        InvoiceRow[]
      >`update invoices set status = 'open', number = ${number}, plan_id = ${invoice.plan_id},
          subtotal_minor = ${subtotal}, tax_rate_bps = ${rateBps}, tax_minor = ${tax}, total_minor = ${subtotal + tax},
          finalized_at = ${at}
        where id = ${invoice.id} and status = 'draft' returning *`;
      if (!row) throw new Error(`invoice ${invoice.id} is not a draft`);
      return row;
    },

    async updateInvoicePayment(i: InvoiceRow): Promise<void> {
      await q`update invoices set status = ${i.status}, amount_paid_minor = ${i.amount_paid_minor},
          paid_at = ${i.paid_at}, attempt_count = ${i.attempt_count}, next_payment_attempt_at = ${i.next_payment_attempt_at}
        where id = ${i.id}`;
    },

    /**
     * Voids an open or uncollectible invoice at `at`: it keeps its number and loses its next
     * payment attempt, so dunning never retries it. Undefined when it was in another status.
     */
    async voidInvoice(id: string, at: Date): Promise<InvoiceRow | undefined> {
      const [row] = await q<InvoiceRow[]>`update invoices set status = 'void', voided_at = ${at},
          next_payment_attempt_at = null
        where id = ${id} and status in ('open', 'uncollectible') returning *`;
      return row;
    },

    /** Open invoices of a subscription other than exceptId. */
    async openInvoiceCount(subscriptionId: string, exceptId: string): Promise<number> {
      const [row] = await q<{ n: number }[]>`select count(*)::int as n from invoices
        where subscription_id = ${subscriptionId} and status = 'open' and id <> ${exceptId}`;
      return row?.n ?? 0;
    },

    /** The earliest work due on the tenant's clock at or before `until`: dunning retries first on a tie. */
    async nextDue(tenantId: string, until: Date): Promise<DueItem | undefined> {
      const [row] = await q<{ kind: "retry" | "period_end"; at: Date; id: string }[]>`
        select * from (
          select 'retry' as kind, next_payment_attempt_at as at, id, 0 as rank from invoices
            where tenant_id = ${tenantId} and status = 'open' and next_payment_attempt_at <= ${until}
          union all
          select 'period_end', current_period_end, id, 1 from subscriptions
            where tenant_id = ${tenantId} and status <> 'canceled' and current_period_end <= ${until}
        ) due order by at, rank, id limit 1`;
      return row && { kind: row.kind, at: row.at, id: row.id };
    },

    /** Tenants with work due by their own clock (wall clock, or later where AdvanceClock moved it). */
    async tenantsWithDueWork(limit: number): Promise<string[]> {
      const rows = await q<{ tenant_id: string }[]>`
        select distinct d.tenant_id from (
          select tenant_id, next_payment_attempt_at as at from invoices where status = 'open'
            and next_payment_attempt_at is not null
          union all
          select tenant_id, current_period_end from subscriptions where status <> 'canceled'
        ) d left join billing_clocks c using (tenant_id)
        where d.at <= greatest(now(), coalesce(c.now_at, now()))
        limit ${limit}`;
      return rows.map((r) => r.tenant_id);
    },

    /** The tenant's live subscription and whether its plan meters metric, in one round trip. */
    async usageContext(tenantId: string, metric: string) {
      const [row] = await q<{ id: string; plan_id: string; current_period_start: Date; metered: boolean }[]>`
        select s.id, s.plan_id, s.current_period_start, (m.metric is not null) as metered
        from subscriptions s
        left join plan_metered_components m on m.plan_id = s.plan_id and m.metric = ${metric}
        where s.tenant_id = ${tenantId} and s.status <> 'canceled'`;
      return row;
    },

    async insertUsage(u: UsageRow): Promise<void> {
      await q`insert into usage_records (id, tenant_id, subscription_id, plan_id, metric, quantity, usage_at, created_at)
        values (${u.id}, ${u.tenant_id}, ${u.subscription_id}, ${u.plan_id}, ${u.metric}, ${u.quantity},
          ${u.usage_at}, ${u.created_at})`;
    },

    /** Usage of a subscription in [start, end), summed per plan and metric. */
    async usageTotals(subscriptionId: string, start: Date, end: Date) {
      return q<{ plan_id: string; metric: string; quantity: bigint }[]>`
        select plan_id, metric, sum(quantity)::bigint as quantity from usage_records
        where subscription_id = ${subscriptionId} and usage_at >= ${start} and usage_at < ${end}
        group by plan_id, metric order by metric, plan_id`;
    },

    async countUsage(tenantId: string): Promise<number> {
      const [row] = await q<
        { n: number }[]
      >`select count(*)::int as n from usage_records where tenant_id = ${tenantId}`;
      return row?.n ?? 0;
    },
  };
}
