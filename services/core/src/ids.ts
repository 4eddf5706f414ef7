import { uuidv7 } from "@trellis/kit/events.js";

/** A new product id: "prd_" and a UUIDv7 in hex, so ids sort by creation time. */
export function newProductId(): string {
  return `prd_${uuidv7().replaceAll("-", "")}`;
}

/** A new order id: "ord_" and a UUIDv7 in hex, so ids sort by creation time. */
export function newOrderId(): string {
  return `ord_${uuidv7().replaceAll("-", "")}`;
}

/** The idempotency key of an order's charge: the same on every attempt, so billing charges once. */
export function chargeKey(orderId: string): string {
  return `order:${orderId}:charge`;
}

/** The idempotency key of an order's refund. */
export function refundKey(orderId: string): string {
  return `order:${orderId}:refund`;
}
