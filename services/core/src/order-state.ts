import { Code, ConnectError } from "@connectrpc/connect";
import { OrderStatus } from "@trellis/gen/trellis/core/v1/core_pb.js";

// The order lifecycle, in one place. Every status change in core goes through assertTransition
// (the store's setOrderStatus calls it and updates conditionally on the status it checked), so
// an illegal transition is failed_precondition wherever it is attempted.
//
//   pending ──► reserved ──► paid ──► confirmed ──► fulfilled
//      │           │          │           │
//      ├───────────┴──────────┴───────────┴──► cancelled   (user; payment refunded, stock released)
//      └───────────┴──────────┘                failed      (a saga step failed; earlier steps compensated)

/** An order status as stored. */
export type OrderState = "pending" | "reserved" | "paid" | "confirmed" | "fulfilled" | "cancelled" | "failed";

const transitions: Readonly<Record<OrderState, readonly OrderState[]>> = {
  pending: ["reserved", "failed", "cancelled"],
  reserved: ["paid", "failed", "cancelled"],
  paid: ["confirmed", "failed", "cancelled"],
  confirmed: ["fulfilled", "cancelled"],
  fulfilled: [],
  cancelled: [],
  failed: [],
};

/** Every status, in lifecycle order. */
export const orderStates = Object.keys(transitions) as OrderState[];

/** Whether an order may move from one status to another. */
export function canTransition(from: OrderState, to: OrderState): boolean {
  return transitions[from].includes(to);
}

/** Throws failed_precondition unless the order may move from `from` to `to`. */
export function assertTransition(from: OrderState, to: OrderState): void {
  if (!canTransition(from, to)) {
    throw new ConnectError(`an order cannot go from ${from} to ${to}`, Code.FailedPrecondition);
  }
}

/** Whether no transition leaves the status. */
export function isTerminal(state: OrderState): boolean {
  return transitions[state].length === 0;
}

const toProto: Readonly<Record<OrderState, OrderStatus>> = {
  pending: OrderStatus.PENDING,
  reserved: OrderStatus.RESERVED,
  paid: OrderStatus.PAID,
  confirmed: OrderStatus.CONFIRMED,
  fulfilled: OrderStatus.FULFILLED,
  cancelled: OrderStatus.CANCELLED,
  failed: OrderStatus.FAILED,
};

/** The contract's enum value of a status. */
export function orderStatusToProto(state: OrderState): OrderStatus {
  return toProto[state];
}

/** The stored status of a contract enum value; undefined for UNSPECIFIED or unknown values. */
export function orderStatusFromProto(status: OrderStatus): OrderState | undefined {
  return orderStates.find((s) => toProto[s] === status);
}

/** Whether a string read from the database is a status. */
export function isOrderState(value: string): value is OrderState {
  return value in transitions;
}
