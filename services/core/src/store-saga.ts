import type { Sql, Tx } from "./store-inventory.js";

/** Where a saga stands overall. */
export type SagaStatus = "running" | "compensating" | "completed" | "compensated";

/** The step a saga runs next: forward (reserve, charge, confirm) or compensating (refund, release, resolve_charge). */
export type SagaStep = "reserve" | "charge" | "confirm" | "refund" | "release" | "resolve_charge" | "done";

/** What core knows about the order's payment. */
export type ChargeState = "none" | "pending" | "succeeded" | "failed" | "unknown" | "refunded";

/** A saga as stored. */
export interface SagaRow {
  readonly order_id: string;
  readonly tenant_id: string;
  readonly status: SagaStatus;
  readonly step: SagaStep;
  readonly attempts: number;
  readonly next_attempt_at: Date;
  readonly charge_state: ChargeState;
  readonly charge_id: string;
  readonly failure_reason: string;
  readonly cancel_requested: boolean;
  readonly cancel_reason: string;
  readonly cancelled_by: string;
  readonly last_error: string;
}

/** The columns a step may change. */
export interface SagaPatch {
  status?: SagaStatus;
  step?: SagaStep;
  attempts?: number;
  next_attempt_at?: Date;
  charge_state?: ChargeState;
  charge_id?: string;
  failure_reason?: string;
  cancel_requested?: boolean;
  cancel_reason?: string;
  cancelled_by?: string;
  last_error?: string;
}

/** One line of a saga's log. */
export interface SagaLogRow {
  readonly step: string;
  readonly outcome: string;
  readonly detail: string;
  readonly attempt: number;
  readonly at: Date;
}

/** Whether a saga has nothing left to do. */
export function sagaFinished(status: SagaStatus): boolean {
  return status === "completed" || status === "compensated";
}

/** Starts the saga of a new order at its first step. */
export async function insertSaga(tx: Tx, tenantId: string, orderId: string): Promise<void> {
  await Promise.all([
    tx`insert into sagas (order_id, tenant_id, status, step) values (${orderId}, ${tenantId}, 'running', 'reserve')`,
    tx`insert into saga_log (order_id, step, outcome) values (${orderId}, 'start', 'running')`,
  ]);
}

/** The saga of an order, optionally locked for the rest of the transaction. */
export async function loadSaga(sql: Sql, orderId: string, lock = false): Promise<SagaRow | undefined> {
  const [row] = lock
    ? await sql<SagaRow[]>`select * from sagas where order_id = ${orderId} for update`
    : await sql<SagaRow[]>`select * from sagas where order_id = ${orderId}`;
  return row;
}

/** Writes a step's outcome to the saga row and its log, in the caller's transaction. */
export async function recordStep(
  tx: Tx,
  orderId: string,
  patch: SagaPatch,
  log: { step: string; outcome: string; detail?: string; attempt?: number },
): Promise<void> {
  const next: SagaPatch = { next_attempt_at: new Date(0), ...patch };
  // Pipelined: both statements go out in one round trip on the transaction's connection.
  await Promise.all([
    tx`update sagas set ${tx(next as Record<string, unknown>)}, updated_at = now() where order_id = ${orderId}`,
    tx`insert into saga_log (order_id, step, outcome, detail, attempt)
      values (${orderId}, ${log.step}, ${log.outcome}, ${log.detail ?? ""}, ${log.attempt ?? 0})`,
  ]);
}

/** Postpones a saga after an unexpected failure (the database, a bug): it is retried at `at`. */
export async function delaySaga(sql: Sql, orderId: string, at: Date, error: string): Promise<void> {
  await sql`update sagas set next_attempt_at = ${at}, last_error = ${error.slice(0, 500)}, updated_at = now()
    where order_id = ${orderId} and status in ('running', 'compensating')`;
}

/** Unfinished sagas whose next attempt is due, soonest first. */
export async function dueSagas(sql: Sql, limit: number, afterOrderId = ""): Promise<string[]> {
  const rows = await sql<{ order_id: string }[]>`
    select order_id from sagas
    where status in ('running', 'compensating') and next_attempt_at <= now() and order_id > ${afterOrderId}
    order by order_id
    limit ${limit}`;
  return rows.map((r) => r.order_id);
}

/** A saga's log, oldest first. */
export async function sagaLog(sql: Sql, orderId: string): Promise<SagaLogRow[]> {
  return sql<SagaLogRow[]>`
    select step, outcome, detail, attempt, at from saga_log where order_id = ${orderId} order by id`;
}

/** A tenant's cached billing status. */
export interface TenantBillingRow {
  readonly tenant_id: string;
  readonly subscription_status: string;
  readonly plan_id: string;
  readonly max_order_minor: bigint | null;
  readonly max_order_currency: string | null;
  readonly fetched_at: Date | null;
  readonly stale: boolean;
  readonly version: bigint;
}

/** The cached billing status of a tenant, if any. */
export async function getTenantBilling(sql: Sql, tenantId: string): Promise<TenantBillingRow | undefined> {
  const [row] = await sql<TenantBillingRow[]>`select * from tenant_billing where tenant_id = ${tenantId}`;
  return row;
}

/**
 * Stores a fresh answer from billing, unless an event changed the row since `seenVersion` was
 * read (that answer may predate the event; the next order fetches again).
 */
export async function storeTenantBilling(
  sql: Sql,
  row: Omit<TenantBillingRow, "fetched_at" | "stale" | "version">,
  seenVersion: bigint | undefined,
): Promise<void> {
  await sql`
    insert into tenant_billing (tenant_id, subscription_status, plan_id, max_order_minor, max_order_currency,
                                fetched_at, status_at, stale, version)
    values (${row.tenant_id}, ${row.subscription_status}, ${row.plan_id}, ${row.max_order_minor?.toString() ?? null},
            ${row.max_order_currency}, now(), '-infinity', false, 0)
    on conflict (tenant_id) do update set
      subscription_status = excluded.subscription_status, plan_id = excluded.plan_id,
      max_order_minor = excluded.max_order_minor, max_order_currency = excluded.max_order_currency,
      fetched_at = now(), stale = false
    where tenant_billing.version = ${(seenVersion ?? 0n).toString()}::bigint`;
}

/**
 * Applies a subscription event: the new status takes effect at once and the row is marked stale so
 * the plan's limits are fetched again. Events older than the last applied one change nothing.
 */
export async function applySubscriptionEvent(
  tx: Tx,
  tenantId: string,
  status: string,
  at: Date,
): Promise<void> {
  await tx`
    insert into tenant_billing (tenant_id, subscription_status, status_at, stale, version)
    values (${tenantId}, ${status}, ${at}, true, 1)
    on conflict (tenant_id) do update set
      subscription_status = excluded.subscription_status, status_at = excluded.status_at,
      stale = true, version = tenant_billing.version + 1
    where tenant_billing.status_at <= excluded.status_at`;
}
