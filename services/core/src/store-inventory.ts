import { Code, ConnectError } from "@connectrpc/connect";
import type { Db } from "@trellis/kit/db.js";
import type postgres from "postgres";
import type { CoreEvents } from "./events.js";

/** A pool or a transaction: the queries that can run in either take this. */
export type Sql = postgres.ISql<{ bigint: bigint }>;
/** A transaction. */
export type Tx = postgres.TransactionSql<{ bigint: bigint }>;

/** A product's stock as stored. */
export interface StockRow {
  readonly tenant_id: string;
  readonly product_id: string;
  readonly on_hand: bigint;
  readonly reserved: bigint;
  readonly low_notified: boolean;
  readonly updated_at: Date;
}

/** The result of AdjustStock. */
export interface Adjustment {
  readonly stock: StockRow;
  readonly replayed: boolean;
}

/** Thrown inside a reserving transaction when an item cannot be reserved; rolls it back. */
export class OutOfStockError extends Error {
  constructor(readonly productId: string) {
    super(`not enough stock of ${productId}`);
  }
}

interface ChangedStock extends StockRow {
  readonly sku: string;
  readonly low_stock_threshold: number;
}

/** A product's stock, or undefined when the tenant has no such product. */
export async function getStock(sql: Sql, tenantId: string, productId: string): Promise<StockRow | undefined> {
  const [row] = await sql<StockRow[]>`
    select * from stock where tenant_id = ${tenantId} and product_id = ${productId}`;
  return row;
}

// After any change to a product's available units: flip the low-stock flag when the threshold is
// crossed, publishing StockLow on the way down, so the event fires once per crossing.
async function afterChange(tx: Tx, events: CoreEvents, row: ChangedStock): Promise<void> {
  const available = row.on_hand - row.reserved;
  const low = row.low_stock_threshold > 0 && available <= BigInt(row.low_stock_threshold);
  if (low === row.low_notified) return;
  await tx`update stock set low_notified = ${low}
    where tenant_id = ${row.tenant_id} and product_id = ${row.product_id}`;
  if (low) {
    await events.stockLow(tx, {
      tenantId: row.tenant_id,
      productId: row.product_id,
      sku: row.sku,
      available,
      threshold: row.low_stock_threshold,
    });
  }
}

/** Re-evaluates the low-stock state of a product (after its threshold changed). */
export async function refreshLowStock(tx: Tx, events: CoreEvents, tenantId: string, productId: string) {
  const [row] = await tx<ChangedStock[]>`
    select s.*, p.sku, p.low_stock_threshold from stock s
    join products p on p.tenant_id = s.tenant_id and p.product_id = s.product_id
    where s.tenant_id = ${tenantId} and s.product_id = ${productId}`;
  if (row) await afterChange(tx, events, row);
}

// One conditional UPDATE of one stock row, joined with its product for the low-stock check.
// `guard` is the condition that keeps the row valid; no row back means the guard refused.
async function changeStock(
  tx: Tx,
  events: CoreEvents,
  tenantId: string,
  productId: string,
  onHandDelta: bigint,
  reservedDelta: bigint,
): Promise<ChangedStock | undefined> {
  const [row] = await tx<ChangedStock[]>`
    update stock s set
      on_hand = s.on_hand + ${onHandDelta.toString()}::bigint,
      reserved = s.reserved + ${reservedDelta.toString()}::bigint,
      updated_at = now()
    from products p
    where s.tenant_id = ${tenantId} and s.product_id = ${productId}
      and p.tenant_id = s.tenant_id and p.product_id = s.product_id
      and s.reserved + ${reservedDelta.toString()}::bigint >= 0
      and s.on_hand + ${onHandDelta.toString()}::bigint >= s.reserved + ${reservedDelta.toString()}::bigint
    returning s.*, p.sku, p.low_stock_threshold`;
  if (row) await afterChange(tx, events, row);
  return row;
}

/**
 * Adds delta to on-hand stock once per idempotency key: a repeat answers the stored result with
 * replayed = true (failed_precondition when the key was used for another adjustment). not_found
 * for an unknown product; failed_precondition when on-hand would fall below the reserved units.
 */
export async function adjustStock(
  sql: Db,
  events: CoreEvents,
  a: { tenantId: string; productId: string; delta: number; reason: string; key: string },
): Promise<Adjustment> {
  return sql.begin(async (tx) => {
    // Serialises repeats of one key, so the second waits for the first and replays it.
    await tx`select pg_advisory_xact_lock(hashtextextended(${`${a.tenantId}/${a.key}`}, 0))`;
    const [prior] = await tx<{ product_id: string; delta: number }[]>`
      select product_id, delta from stock_adjustments
      where tenant_id = ${a.tenantId} and idempotency_key = ${a.key}`;
    if (prior) {
      if (prior.product_id !== a.productId || prior.delta !== a.delta) {
        throw new ConnectError(
          "idempotency key already used for another adjustment",
          Code.FailedPrecondition,
        );
      }
      const [stored] = await tx<StockRow[]>`
        select a.tenant_id, a.product_id, a.on_hand_after as on_hand, a.reserved_after as reserved,
               false as low_notified, a.created_at as updated_at
        from stock_adjustments a where a.tenant_id = ${a.tenantId} and a.idempotency_key = ${a.key}`;
      if (!stored) throw new Error("adjustment vanished");
      return { stock: stored, replayed: true };
    }
    const row = await changeStock(tx, events, a.tenantId, a.productId, BigInt(a.delta), 0n);
    if (!row) {
      const exists = await getStock(tx, a.tenantId, a.productId);
      if (!exists) throw new ConnectError("product not found", Code.NotFound);
      throw new ConnectError("on-hand stock cannot fall below the reserved units", Code.FailedPrecondition);
    }
    await tx`insert into stock_adjustments (tenant_id, idempotency_key, product_id, delta, reason, on_hand_after,
                                           reserved_after, created_at)
      values (${a.tenantId}, ${a.key}, ${a.productId}, ${a.delta}, ${a.reason}, ${row.on_hand.toString()},
              ${row.reserved.toString()}, ${row.updated_at})`;
    return { stock: row, replayed: false };
  });
}

/**
 * Reserves every item for the order (held until expiresInMs from now) with one conditional UPDATE
 * per product, in product order so concurrent orders never deadlock. Throws OutOfStockError,
 * which must roll the transaction back, when any item lacks available units.
 */
export async function reserveItems(
  tx: Tx,
  events: CoreEvents,
  tenantId: string,
  orderId: string,
  items: readonly { productId: string; quantity: number }[],
  expiresInMs: number,
): Promise<void> {
  const sorted = [...items].sort((a, b) => (a.productId < b.productId ? -1 : 1));
  for (const item of sorted) {
    const row = await changeStock(tx, events, tenantId, item.productId, 0n, BigInt(item.quantity));
    if (!row) throw new OutOfStockError(item.productId);
  }
  await tx`
    insert into reservations (tenant_id, order_id, product_id, quantity, status, expires_at)
    select ${tenantId}, ${orderId}, u.product_id, u.quantity, 'held',
           now() + make_interval(secs => ${expiresInMs / 1000})
    from unnest(${sorted.map((i) => i.productId)}::text[], ${sorted.map((i) => i.quantity)}::int[])
      as u(product_id, quantity)`;
}

/** Marks the order's held reservations committed (they no longer expire); returns how many. */
export async function commitReservations(tx: Tx, tenantId: string, orderId: string): Promise<number> {
  const rows = await tx`
    update reservations set status = 'committed', expires_at = null, updated_at = now()
    where tenant_id = ${tenantId} and order_id = ${orderId} and status = 'held'
    returning 1`;
  return rows.length;
}

/** How many of the order's reservations were released (by the sweeper, when they expired). */
export async function releasedReservations(sql: Sql, tenantId: string, orderId: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select count(*)::int as n from reservations
    where tenant_id = ${tenantId} and order_id = ${orderId} and status = 'released'`;
  return row?.n ?? 0;
}

/**
 * Returns the units of the order's reservations in the given statuses to available stock and
 * marks them released; with onlyExpired, only held reservations whose time is up. Returns how many.
 */
export async function releaseReservations(
  tx: Tx,
  events: CoreEvents,
  tenantId: string,
  orderId: string,
  options: { onlyExpired?: boolean } = {},
): Promise<number> {
  const rows = await tx<{ product_id: string; quantity: number }[]>`
    update reservations set status = 'released', expires_at = null, updated_at = now()
    where tenant_id = ${tenantId} and order_id = ${orderId}
      and ${options.onlyExpired ? tx`status = 'held' and expires_at <= now()` : tx`status in ('held', 'committed')`}
    returning product_id, quantity`;
  rows.sort((a, b) => (a.product_id < b.product_id ? -1 : 1));
  for (const r of rows) {
    const changed = await changeStock(tx, events, tenantId, r.product_id, 0n, -BigInt(r.quantity));
    if (!changed) throw new Error(`releasing ${r.product_id} of ${orderId} broke the stock invariant`);
  }
  return rows.length;
}

/** Takes the order's committed units out of stock for good (fulfillment). */
export async function fulfillReservations(tx: Tx, events: CoreEvents, tenantId: string, orderId: string) {
  const rows = await tx<{ product_id: string; quantity: number }[]>`
    update reservations set status = 'fulfilled', updated_at = now()
    where tenant_id = ${tenantId} and order_id = ${orderId} and status = 'committed'
    returning product_id, quantity`;
  rows.sort((a, b) => (a.product_id < b.product_id ? -1 : 1));
  for (const r of rows) {
    const q = -BigInt(r.quantity);
    const changed = await changeStock(tx, events, tenantId, r.product_id, q, q);
    if (!changed) throw new Error(`fulfilling ${r.product_id} of ${orderId} broke the stock invariant`);
  }
}

/** Orders holding reservations past their expiry, oldest first. */
export async function ordersWithExpiredReservations(
  sql: Sql,
  limit: number,
): Promise<{ tenant_id: string; order_id: string }[]> {
  return sql<{ tenant_id: string; order_id: string }[]>`
    select tenant_id, order_id from reservations
    where status = 'held' and expires_at <= now()
    group by tenant_id, order_id
    order by min(expires_at)
    limit ${limit}`;
}
