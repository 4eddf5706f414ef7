import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampNow } from "@bufbuild/protobuf/wkt";
import {
  SubscriptionCanceledSchema,
  SubscriptionCreatedSchema,
  SubscriptionUpdatedSchema,
} from "@trellis/gen/trellis/billing/v1/events_pb.js";
import {
  OrderCancelledSchema,
  OrderConfirmedSchema,
  OrderCreatedSchema,
  OrderFailedSchema,
  OrderFulfilledSchema,
  StockLowSchema,
} from "@trellis/gen/trellis/core/v1/events_pb.js";
import { decodeEvent, type EventConsumer, type ReceivedEvent, startConsumer } from "@trellis/kit/consumer.js";
import type { Db } from "@trellis/kit/db.js";
import type { InjectTrace } from "@trellis/kit/events.js";
import type { Logger } from "@trellis/kit/logger.js";
import { enqueue } from "@trellis/kit/outbox.js";
import type { NatsConnection } from "nats";
import { billingSubscriptionState } from "./billing.js";
import { money, orderItemToProto } from "./convert.js";
import { orderStatusToProto } from "./order-state.js";
import { applySubscriptionEvent, type OrderItemRow, type OrderRow, type Tx } from "./store.js";

/** The stream core publishes to: CORE, subjects trellis.core.>. */
export const coreStream = { name: "CORE", subjects: ["trellis.core.>"] } as const;

/** Billing's stream and the subjects of its subscription events, which refresh the business rules. */
export const billingSubscriptionEvents = {
  stream: "BILLING",
  subjects: "trellis.billing.subscription.>",
} as const;

/** Writes core's domain events to the outbox inside the caller's transaction. */
export interface CoreEvents {
  orderCreated(tx: Tx, order: OrderRow, items: readonly OrderItemRow[]): Promise<void>;
  orderConfirmed(tx: Tx, order: OrderRow, units: number): Promise<void>;
  orderFailed(tx: Tx, order: OrderRow, lastStatus: OrderRow["status"], reason: string): Promise<void>;
  orderCancelled(
    tx: Tx,
    order: OrderRow,
    e: { previous: OrderRow["status"]; reason: string; by: string; refundedMinor: bigint },
  ): Promise<void>;
  orderFulfilled(tx: Tx, order: OrderRow, by: string): Promise<void>;
  stockLow(
    tx: Tx,
    e: { tenantId: string; productId: string; sku: string; available: bigint; threshold: number },
  ): Promise<void>;
}

/** Core's event writers; injectTrace adds the current traceparent to each event. */
export function createCoreEvents(options: { injectTrace?: InjectTrace } = {}): CoreEvents {
  const opts = { injectTrace: options.injectTrace };
  return {
    async orderCreated(tx, order, items) {
      await enqueue(
        tx,
        OrderCreatedSchema,
        create(OrderCreatedSchema, {
          tenantId: order.tenant_id,
          orderId: order.order_id,
          userId: order.user_id,
          items: items.map(orderItemToProto),
          total: money(order.total_minor, order.currency),
          createTime: timestampNow(),
        }),
        opts,
      );
    },
    async orderConfirmed(tx, order, units) {
      await enqueue(
        tx,
        OrderConfirmedSchema,
        create(OrderConfirmedSchema, {
          tenantId: order.tenant_id,
          orderId: order.order_id,
          userId: order.user_id,
          total: money(order.total_minor, order.currency),
          paymentId: order.payment_id,
          units: BigInt(units),
          confirmTime: timestampNow(),
        }),
        opts,
      );
    },
    async orderFailed(tx, order, lastStatus, reason) {
      await enqueue(
        tx,
        OrderFailedSchema,
        create(OrderFailedSchema, {
          tenantId: order.tenant_id,
          orderId: order.order_id,
          userId: order.user_id,
          lastStatus: orderStatusToProto(lastStatus),
          failureReason: reason,
          total: money(order.total_minor, order.currency),
          failTime: timestampNow(),
        }),
        opts,
      );
    },
    async orderCancelled(tx, order, e) {
      await enqueue(
        tx,
        OrderCancelledSchema,
        create(OrderCancelledSchema, {
          tenantId: order.tenant_id,
          orderId: order.order_id,
          userId: order.user_id,
          cancelledBy: e.by,
          previousStatus: orderStatusToProto(e.previous),
          reason: e.reason,
          refunded: money(e.refundedMinor, order.currency),
          cancelTime: timestampNow(),
        }),
        opts,
      );
    },
    async orderFulfilled(tx, order, by) {
      await enqueue(
        tx,
        OrderFulfilledSchema,
        create(OrderFulfilledSchema, {
          tenantId: order.tenant_id,
          orderId: order.order_id,
          userId: order.user_id,
          fulfilledBy: by,
          fulfillTime: timestampNow(),
        }),
        opts,
      );
    },
    async stockLow(tx, e) {
      await enqueue(
        tx,
        StockLowSchema,
        create(StockLowSchema, {
          tenantId: e.tenantId,
          productId: e.productId,
          sku: e.sku,
          available: e.available,
          threshold: e.threshold,
          time: timestampNow(),
        }),
        opts,
      );
    },
  };
}

/** Applies one of billing's subscription events to the cached billing status of its tenant. */
export async function handleSubscriptionEvent(tx: Tx, event: ReceivedEvent): Promise<void> {
  const decoded =
    event.type === SubscriptionCreatedSchema.typeName
      ? decodeEvent(SubscriptionCreatedSchema, event)
      : event.type === SubscriptionUpdatedSchema.typeName
        ? decodeEvent(SubscriptionUpdatedSchema, event)
        : event.type === SubscriptionCanceledSchema.typeName
          ? decodeEvent(SubscriptionCanceledSchema, event)
          : undefined;
  if (!decoded) return;
  const status = "status" in decoded ? billingSubscriptionState(decoded.status) : "canceled";
  const at = decoded.occurredAt ? timestampDate(decoded.occurredAt) : event.time;
  await applySubscriptionEvent(tx, decoded.tenantId, status, at);
}

/**
 * Consumes billing's subscription events (durable "core-billing-subscriptions"). Billing's stream
 * may not exist yet when core starts: the consumer is retried in the background until it does.
 */
export function startSubscriptionConsumer(options: {
  nats: NatsConnection;
  sql: Db;
  logger: Logger;
  retryMs?: number;
}): { stop(): Promise<void> } {
  let consumer: EventConsumer | undefined;
  let stopped = false;
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;
  let current: Promise<void> | undefined;
  const attempt = async () => {
    try {
      const started = await startConsumer({
        nats: options.nats,
        sql: options.sql,
        stream: billingSubscriptionEvents.stream,
        durable: "core-billing-subscriptions",
        filterSubjects: [billingSubscriptionEvents.subjects],
        handler: handleSubscriptionEvent,
        logger: options.logger,
      });
      if (stopped) await started.stop();
      else consumer = started;
      if (failures > 0) options.logger.info("billing subscription events consumed");
    } catch (error) {
      if (stopped) return;
      const log = failures++ === 0 ? options.logger.warn : options.logger.debug;
      log.call(options.logger, { err: error }, "billing subscription events not consumable yet; retrying");
      timer = setTimeout(() => {
        current = attempt();
      }, options.retryMs ?? 2000);
      timer.unref();
    }
  };
  current = attempt();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await current;
      await consumer?.stop();
    },
  };
}
