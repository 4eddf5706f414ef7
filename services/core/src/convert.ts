import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Money, MoneySchema } from "@trellis/gen/trellis/common/v1/money_pb.js";
import {
  type Order,
  type OrderItem,
  OrderItemSchema,
  OrderSchema,
  OrderStatusChangeSchema,
  type Product,
  ProductSchema,
  type Stock,
  StockSchema,
} from "@trellis/gen/trellis/core/v1/core_pb.js";
import { orderStatusToProto } from "./order-state.js";
import type { OrderItemRow, OrderRecord, ProductRow, StockRow } from "./store.js";

/** Money from minor units and a currency. */
export function money(amountMinor: bigint, currency: string): Money {
  return create(MoneySchema, { amountMinor, currency });
}

/** The contract's Product for a stored row. */
export function productToProto(row: ProductRow): Product {
  return create(ProductSchema, {
    productId: row.product_id,
    sku: row.sku,
    name: row.name,
    description: row.description,
    price: money(row.price_minor, row.currency),
    active: row.active,
    lowStockThreshold: row.low_stock_threshold,
    version: row.version,
    createTime: timestampFromDate(row.created_at),
    updateTime: timestampFromDate(row.updated_at),
  });
}

/** The contract's Stock for a stored row. */
export function stockToProto(row: StockRow): Stock {
  const available = row.on_hand - row.reserved;
  return create(StockSchema, {
    productId: row.product_id,
    onHand: row.on_hand,
    reserved: row.reserved,
    available: available > 0n ? available : 0n,
    updateTime: timestampFromDate(row.updated_at),
  });
}

/** The contract's OrderItem for a stored line. */
export function orderItemToProto(item: OrderItemRow): OrderItem {
  return create(OrderItemSchema, {
    productId: item.product_id,
    sku: item.sku,
    name: item.name,
    quantity: item.quantity,
    unitPrice: money(item.unit_price_minor, item.currency),
    lineTotal: money(item.unit_price_minor * BigInt(item.quantity), item.currency),
  });
}

/** The contract's Order for a stored order with its lines and history. */
export function orderToProto({ order, items, history }: OrderRecord): Order {
  return create(OrderSchema, {
    orderId: order.order_id,
    userId: order.user_id,
    status: orderStatusToProto(order.status),
    failureReason: order.status === "failed" ? order.failure_reason : "",
    cancelReason: order.status === "cancelled" ? order.cancel_reason : "",
    items: items.map(orderItemToProto),
    total: money(order.total_minor, order.currency),
    paymentMethod: order.payment_method,
    paymentId: order.payment_id,
    history: history.map((h) =>
      create(OrderStatusChangeSchema, {
        status: orderStatusToProto(h.status),
        time: timestampFromDate(h.at),
        note: h.note,
      }),
    ),
    createTime: timestampFromDate(order.created_at),
    updateTime: timestampFromDate(order.updated_at),
  });
}
