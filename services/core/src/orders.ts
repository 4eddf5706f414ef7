import { createHash } from "node:crypto";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { CoreService, CreateOrderRequest } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { requirePrincipal } from "@trellis/kit/access.js";
import type { Db } from "@trellis/kit/db.js";
import type { BillingStatusSource } from "./billing-status.js";
import { orderToProto } from "./convert.js";
import type { CoreEvents } from "./events.js";
import { newOrderId } from "./ids.js";
import { assertTransition, type OrderState, orderStatusFromProto } from "./order-state.js";
import { decodePageToken, encodePageToken, filterFingerprint, pageSize } from "./page-token.js";
import { checkBilling, checkOrder, enforce, needsBilling, type RulesConfig } from "./rules.js";
import type { SagaRunner } from "./saga.js";
import {
  findOrderByKey,
  fulfillReservations,
  getOrder,
  getProducts,
  insertOrder,
  insertSaga,
  listOrders,
  loadSaga,
  lockOrder,
  type OrderRow,
  recordStep,
  setOrderStatus,
} from "./store.js";

type OrderHandlers = Pick<
  ServiceImpl<typeof CoreService>,
  "createOrder" | "getOrder" | "listOrders" | "cancelOrder" | "fulfillOrder"
>;

/** What the order RPCs need. */
export interface OrderDeps {
  readonly sql: Db;
  readonly events: CoreEvents;
  readonly saga: SagaRunner;
  readonly billingStatus: BillingStatusSource;
  readonly rules: RulesConfig;
  /** How long CreateOrder and CancelOrder wait for the saga before answering the current state. */
  readonly waitMs: number;
}

// Items in product order and the payment method: a reused key with another order is refused.
function requestHash(req: CreateOrderRequest): string {
  const items = req.items
    .map((i) => [i.productId, i.quantity] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : 1));
  return createHash("sha256")
    .update(JSON.stringify([items, req.paymentMethod]))
    .digest("hex");
}

/** The order RPCs: CreateOrder starts the saga; cancel and fulfil go through the state machine. */
export function createOrderHandlers(deps: OrderDeps): OrderHandlers {
  const { sql, events, saga } = deps;

  const waitBudget = (ctx: HandlerContext) => {
    const remaining = ctx.timeoutMs();
    return remaining === undefined ? deps.waitMs : Math.max(0, Math.min(deps.waitMs, remaining - 250));
  };

  const answer = async (tenantId: string, orderId: string) => {
    const record = await getOrder(sql, tenantId, orderId);
    if (!record) throw new ConnectError("order not found", Code.NotFound);
    return orderToProto(record);
  };

  const replay = async (existing: OrderRow, hash: string) => {
    if (existing.request_hash !== hash) {
      throw new ConnectError("idempotency key already used for another order", Code.FailedPrecondition);
    }
    return { order: await answer(existing.tenant_id, existing.order_id), replayed: true };
  };

  return {
    async createOrder(req, ctx) {
      const principal = requirePrincipal(ctx);
      const { tenantId } = principal;
      const hash = requestHash(req);
      const existing = await findOrderByKey(sql, tenantId, req.idempotencyKey);
      if (existing) return replay(existing, hash);

      const products = new Map(
        (
          await getProducts(
            sql,
            tenantId,
            req.items.map((i) => i.productId),
          )
        ).map((p) => [p.product_id, p]),
      );
      const lines = req.items.map((item) => {
        const product = products.get(item.productId);
        if (!product) throw new ConnectError(`product ${item.productId} not found`, Code.NotFound);
        if (!product.active)
          throw new ConnectError(`product ${item.productId} is not active`, Code.FailedPrecondition);
        return { product, quantity: item.quantity };
      });
      const currency = lines[0]?.product.currency ?? "";
      if (lines.some((l) => l.product.currency !== currency)) {
        throw new ConnectError("all products of an order must share one currency", Code.InvalidArgument);
      }
      const total = lines.reduce((sum, l) => sum + l.product.price_minor * BigInt(l.quantity), 0n);
      const facts = {
        lines: lines.map((l) => ({ productId: l.product.product_id, quantity: l.quantity })),
        total: { amountMinor: total, currency },
      };
      enforce(checkOrder(deps.rules, facts));
      if (needsBilling(deps.rules))
        enforce(checkBilling(deps.rules, facts, await deps.billingStatus.get(tenantId)));

      const orderId = newOrderId();
      const created = await sql.begin(async (tx) => {
        const items = lines.map((l) => ({
          product_id: l.product.product_id,
          sku: l.product.sku,
          name: l.product.name,
          quantity: l.quantity,
          unit_price_minor: l.product.price_minor,
          currency,
        }));
        const row = await insertOrder(tx, {
          tenantId,
          orderId,
          userId: principal.userId,
          totalMinor: total,
          currency,
          paymentMethod: req.paymentMethod,
          idempotencyKey: req.idempotencyKey,
          requestHash: hash,
          items,
        });
        if (!row) return undefined;
        await Promise.all([
          insertSaga(tx, tenantId, orderId),
          events.orderCreated(
            tx,
            row,
            items.map((i, n) => ({ ...i, order_id: orderId, line: n + 1 })),
          ),
        ]);
        return row;
      });
      if (!created) {
        // A concurrent request with the same key won the insert.
        const winner = await findOrderByKey(sql, tenantId, req.idempotencyKey);
        if (!winner) throw new ConnectError("order vanished", Code.Internal);
        return replay(winner, hash);
      }
      await saga.settle(orderId, waitBudget(ctx));
      return { order: await answer(tenantId, orderId), replayed: false };
    },

    async getOrder(req, ctx) {
      const { tenantId } = requirePrincipal(ctx);
      return { order: await answer(tenantId, req.orderId) };
    },

    async listOrders(req, ctx) {
      const { tenantId } = requirePrincipal(ctx);
      const statuses = req.statuses.map((s) => {
        const state = orderStatusFromProto(s);
        if (!state) throw new ConnectError("unknown order status", Code.InvalidArgument);
        return state;
      });
      const fingerprint = filterFingerprint(["orders", [...statuses].sort()]);
      const before = decodePageToken(req.page?.pageToken ?? "", fingerprint);
      const size = pageSize(req.page?.pageSize ?? 0);
      const records = await listOrders(sql, tenantId, statuses, before, size + 1);
      const page = records.slice(0, size);
      const last = page.at(-1);
      return {
        orders: page.map(orderToProto),
        page: {
          nextPageToken:
            records.length > size && last ? encodePageToken(last.order.order_id, fingerprint) : "",
        },
      };
    },

    async cancelOrder(req, ctx) {
      const principal = requirePrincipal(ctx);
      const { tenantId } = principal;
      const started = await sql.begin(async (tx) => {
        const order = await lockOrder(tx, tenantId, req.orderId);
        if (order.status === "cancelled") return false;
        assertTransition(order.status, "cancelled");
        const current = await loadSaga(tx, order.order_id, true);
        const request = { cancel_requested: true, cancel_reason: req.reason, cancelled_by: principal.userId };
        const log = { step: "cancel", outcome: "requested", detail: req.reason };
        if (current?.status === "completed") {
          // Confirmed: undo the saga through its compensations (refund, then release the stock).
          const step = current.charge_id ? "refund" : "release";
          await recordStep(
            tx,
            order.order_id,
            { ...request, status: "compensating", step, attempts: 0, failure_reason: "cancelled" },
            log,
          );
        } else if (current?.status === "running") {
          // The saga sees the request at its next step and compensates whatever it has done.
          await recordStep(tx, order.order_id, request, log);
        } else if (!(current?.status === "compensating" && current.failure_reason === "cancelled")) {
          throw new ConnectError("the order is failing and cannot be cancelled", Code.FailedPrecondition);
        }
        return true;
      });
      if (started) await saga.settle(req.orderId, waitBudget(ctx));
      return { order: await answer(tenantId, req.orderId) };
    },

    async fulfillOrder(req, ctx) {
      const principal = requirePrincipal(ctx);
      const { tenantId } = principal;
      await sql.begin(async (tx) => {
        const order = await lockOrder(tx, tenantId, req.orderId);
        if (order.status === "fulfilled") return;
        assertTransition(order.status, "fulfilled");
        const current = await loadSaga(tx, order.order_id, true);
        if (current && current.status !== "completed") {
          throw new ConnectError("the order is being cancelled", Code.FailedPrecondition);
        }
        await fulfillReservations(tx, events, tenantId, order.order_id);
        const fulfilled = await setOrderStatus(tx, order, "fulfilled" satisfies OrderState, {
          note: req.note,
        });
        await events.orderFulfilled(tx, fulfilled, principal.userId);
      });
      return { order: await answer(tenantId, req.orderId) };
    },
  };
}
