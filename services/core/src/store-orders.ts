import { Code, ConnectError } from "@connectrpc/connect";
import { assertTransition, type OrderState } from "./order-state.js";
import type { Sql, Tx } from "./store-inventory.js";

/** An order as stored. */
export interface OrderRow {
  readonly tenant_id: string;
  readonly order_id: string;
  readonly user_id: string;
  readonly status: OrderState;
  readonly failure_reason: string;
  readonly cancel_reason: string;
  readonly total_minor: bigint;
  readonly currency: string;
  readonly payment_method: string;
  readonly payment_id: string;
  readonly idempotency_key: string;
  readonly request_hash: string;
  readonly created_at: Date;
  readonly updated_at: Date;
}

/** One line of an order as stored. */
export interface OrderItemRow {
  readonly order_id: string;
  readonly line: number;
  readonly product_id: string;
  readonly sku: string;
  readonly name: string;
  readonly quantity: number;
  readonly unit_price_minor: bigint;
  readonly currency: string;
}

/** One entry of an order's status history. */
export interface OrderHistoryRow {
  readonly order_id: string;
  readonly status: OrderState;
  readonly note: string;
  readonly at: Date;
}

/** An order with its lines and history. */
export interface OrderRecord {
  readonly order: OrderRow;
  readonly items: readonly OrderItemRow[];
  readonly history: readonly OrderHistoryRow[];
}

/** A new order and its lines. */
export interface NewOrder {
  readonly tenantId: string;
  readonly orderId: string;
  readonly userId: string;
  readonly totalMinor: bigint;
  readonly currency: string;
  readonly paymentMethod: string;
  readonly idempotencyKey: string;
  readonly requestHash: string;
  readonly items: readonly Omit<OrderItemRow, "order_id" | "line">[];
}

/** The order created with this idempotency key, if any. */
export async function findOrderByKey(sql: Sql, tenantId: string, key: string): Promise<OrderRow | undefined> {
  const [row] = await sql<OrderRow[]>`
    select * from orders where tenant_id = ${tenantId} and idempotency_key = ${key}`;
  return row;
}

/**
 * Inserts a PENDING order with its lines and first history entry; returns false, writing nothing,
 * when the tenant already used the idempotency key (a concurrent twin waits for the first to commit).
 */
export async function insertOrder(tx: Tx, o: NewOrder): Promise<OrderRow | undefined> {
  const [row] = await tx<OrderRow[]>`
    insert into orders (tenant_id, order_id, user_id, status, total_minor, currency, payment_method,
                        idempotency_key, request_hash)
    values (${o.tenantId}, ${o.orderId}, ${o.userId}, 'pending', ${o.totalMinor.toString()}, ${o.currency},
            ${o.paymentMethod}, ${o.idempotencyKey}, ${o.requestHash})
    on conflict (tenant_id, idempotency_key) do nothing
    returning *`;
  if (!row) return undefined;
  await Promise.all([
    tx`
    insert into order_items (tenant_id, order_id, line, product_id, sku, name, quantity, unit_price_minor, currency)
    select ${o.tenantId}, ${o.orderId}, u.ord::int, u.product_id, u.sku, u.name, u.quantity, u.price, u.currency
    from unnest(${o.items.map((i) => i.product_id)}::text[], ${o.items.map((i) => i.sku)}::text[],
                ${o.items.map((i) => i.name)}::text[], ${o.items.map((i) => i.quantity)}::int[],
                ${o.items.map((i) => i.unit_price_minor.toString())}::bigint[], ${o.items.map((i) => i.currency)}::text[])
      with ordinality as u(product_id, sku, name, quantity, price, currency, ord)`,
    tx`insert into order_history (tenant_id, order_id, status) values (${o.tenantId}, ${o.orderId}, 'pending')`,
  ]);
  return row;
}

/** An order row locked for the rest of the transaction; not_found when the tenant has none with this id. */
export async function lockOrder(tx: Tx, tenantId: string, orderId: string): Promise<OrderRow> {
  const [row] = await tx<OrderRow[]>`
    select * from orders where tenant_id = ${tenantId} and order_id = ${orderId} for update`;
  if (!row) throw new ConnectError("order not found", Code.NotFound);
  return row;
}

/** What else changes with a status. */
export interface StatusChange {
  readonly note?: string;
  readonly failureReason?: string;
  readonly cancelReason?: string;
  readonly paymentId?: string;
}

/**
 * Moves a (locked) order to a new status through the state machine: failed_precondition for an
 * illegal transition, or when the order no longer has the status the caller saw. Records history.
 */
export async function setOrderStatus(tx: Tx, order: OrderRow, to: OrderState, change: StatusChange = {}) {
  assertTransition(order.status, to);
  // Pipelined; should the update match nothing, the throw below rolls the history row back.
  const [[row]] = await Promise.all([
    tx<OrderRow[]>`
      update orders set
        status = ${to},
        failure_reason = ${change.failureReason ?? order.failure_reason},
        cancel_reason = ${change.cancelReason ?? order.cancel_reason},
        payment_id = ${change.paymentId ?? order.payment_id},
        updated_at = now()
      where tenant_id = ${order.tenant_id} and order_id = ${order.order_id} and status = ${order.status}
      returning *`,
    tx`insert into order_history (tenant_id, order_id, status, note)
      values (${order.tenant_id}, ${order.order_id}, ${to}, ${change.note ?? ""})`,
  ]);
  if (!row) throw new ConnectError("the order changed concurrently", Code.FailedPrecondition);
  return row;
}

/** The lines of an order. */
export async function orderItems(sql: Sql, tenantId: string, orderId: string): Promise<OrderItemRow[]> {
  return sql<OrderItemRow[]>`select * from order_items
    where tenant_id = ${tenantId} and order_id = ${orderId} order by line`;
}

/** Lines and history of these orders, grouped by order. */
async function details(sql: Sql, tenantId: string, orders: readonly OrderRow[]): Promise<OrderRecord[]> {
  if (orders.length === 0) return [];
  const ids = orders.map((o) => o.order_id);
  const [items, history] = await Promise.all([
    sql<OrderItemRow[]>`select * from order_items
      where tenant_id = ${tenantId} and order_id = any(${ids}::text[]) order by order_id, line`,
    sql<OrderHistoryRow[]>`select order_id, status, note, at from order_history
      where tenant_id = ${tenantId} and order_id = any(${ids}::text[]) order by order_id, id`,
  ]);
  return orders.map((order) => ({
    order,
    items: items.filter((i) => i.order_id === order.order_id),
    history: history.filter((h) => h.order_id === order.order_id),
  }));
}

/** One order of the tenant with lines and history, or undefined. */
export async function getOrder(
  sql: Sql,
  tenantId: string,
  orderId: string,
): Promise<OrderRecord | undefined> {
  const [order] = await sql<OrderRow[]>`
    select * from orders where tenant_id = ${tenantId} and order_id = ${orderId}`;
  if (!order) return undefined;
  return (await details(sql, tenantId, [order]))[0];
}

/** Up to limit orders before `before` (by id, newest first), in one of the statuses when any are given. */
export async function listOrders(
  sql: Sql,
  tenantId: string,
  statuses: readonly OrderState[],
  before: string | undefined,
  limit: number,
): Promise<OrderRecord[]> {
  const orders = await sql<OrderRow[]>`
    select * from orders
    where tenant_id = ${tenantId}
      ${before === undefined ? sql`` : sql`and order_id < ${before}`}
      ${statuses.length === 0 ? sql`` : sql`and status = any(${[...statuses]}::text[])`}
    order by order_id desc
    limit ${limit}`;
  return details(sql, tenantId, orders);
}
