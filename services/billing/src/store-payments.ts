import type { ChargeRow, Q, RefundRow } from "./store-types.ts";

/** Charge and refund queries. */
export function paymentQueries(q: Q) {
  return {
    async insertCharge(c: ChargeRow): Promise<void> {
      await q`insert into charges (id, tenant_id, amount_minor, currency, amount_refunded, status, failure_code,
          failure_message, payment_method, description, metadata, invoice_id, provider_charge_id, created_at)
        values (${c.id}, ${c.tenant_id}, ${c.amount_minor}, ${c.currency}, ${c.amount_refunded}, ${c.status},
          ${c.failure_code}, ${c.failure_message}, ${c.payment_method}, ${c.description}, ${q.json(c.metadata)},
          ${c.invoice_id}, ${c.provider_charge_id}, ${c.created_at})`;
    },

    /** A charge of the tenant, locked for update when lock is set. */
    async getCharge(tenantId: string, id: string, lock = false): Promise<ChargeRow | undefined> {
      const [row] = lock
        ? await q<ChargeRow[]>`select * from charges where tenant_id = ${tenantId} and id = ${id} for update`
        : await q<ChargeRow[]>`select * from charges where tenant_id = ${tenantId} and id = ${id}`;
      return row;
    },

    async updateChargeRefunded(id: string, refunded: bigint, status: ChargeRow["status"]): Promise<void> {
      await q`update charges set amount_refunded = ${refunded}, status = ${status} where id = ${id}`;
    },

    async insertRefund(r: RefundRow, providerRefundId: string): Promise<void> {
      await q`insert into refunds (id, tenant_id, charge_id, amount_minor, currency, reason, provider_refund_id, created_at)
        values (${r.id}, ${r.tenant_id}, ${r.charge_id}, ${r.amount_minor}, ${r.currency}, ${r.reason},
          ${providerRefundId}, ${r.created_at})`;
    },

    async countCharges(tenantId: string): Promise<number> {
      const [row] = await q<
        { n: number }[]
      >`select count(*)::int as n from charges where tenant_id = ${tenantId}`;
      return row?.n ?? 0;
    },
  };
}
