import { Code, ConnectError } from "@connectrpc/connect";

/** The knobs of the business rules; CORE_RULES (JSON) overrides any of them. */
export interface RulesConfig {
  /** Most units of one product in one order (the contract allows up to 1000). */
  readonly maxQuantityPerLine: number;
  /** Most units across all lines of one order. */
  readonly maxUnitsPerOrder: number;
  /** Subscription statuses in which a tenant may place no order. */
  readonly blockedSubscriptionStatuses: readonly SubscriptionState[];
  /** Whether the plan's maximum order value (from billing) is enforced. */
  readonly enforcePlanMaxOrderValue: boolean;
}

/** A tenant's subscription status as billing reports it ("none" when it has no subscription). */
export type SubscriptionState = "none" | "trialing" | "active" | "past_due" | "canceled";

const subscriptionStates: readonly SubscriptionState[] = [
  "none",
  "trialing",
  "active",
  "past_due",
  "canceled",
];

/** Money in minor units. */
export interface Amount {
  readonly amountMinor: bigint;
  readonly currency: string;
}

/** What the rules need to know about the tenant's billing. */
export interface BillingFacts {
  readonly subscription: SubscriptionState;
  readonly planId: string;
  /** The plan's maximum order value; undefined means no limit. */
  readonly maxOrderValue?: Amount;
}

/** What the rules need to know about an order. */
export interface OrderFacts {
  readonly lines: readonly { readonly productId: string; readonly quantity: number }[];
  readonly total: Amount;
}

/** One broken rule: its id, and the code the client gets. */
export interface Violation {
  readonly rule: string;
  readonly code: Code;
  readonly message: string;
}

const defaults: RulesConfig = {
  maxQuantityPerLine: 1000,
  maxUnitsPerOrder: 10_000,
  blockedSubscriptionStatuses: ["past_due"],
  enforcePlanMaxOrderValue: true,
};

/** The rules with the defaults filled in; throws naming the first bad key. */
export function parseRules(input: unknown): RulesConfig {
  if (typeof input !== "object" || input === null || Array.isArray(input))
    throw new Error("rules must be an object");
  const raw = input as Record<string, unknown>;
  for (const key of Object.keys(raw)) {
    if (!(key in defaults)) throw new Error(`unknown rule ${key}`);
  }
  const positive = (key: "maxQuantityPerLine" | "maxUnitsPerOrder") => {
    const value = raw[key] ?? defaults[key];
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
      throw new Error(`${key} must be a positive integer`);
    }
    return value;
  };
  const blocked = raw.blockedSubscriptionStatuses ?? defaults.blockedSubscriptionStatuses;
  if (!Array.isArray(blocked) || !blocked.every((s) => subscriptionStates.includes(s))) {
    throw new Error(`blockedSubscriptionStatuses must list some of ${subscriptionStates.join(", ")}`);
  }
  const enforce = raw.enforcePlanMaxOrderValue ?? defaults.enforcePlanMaxOrderValue;
  if (typeof enforce !== "boolean") throw new Error("enforcePlanMaxOrderValue must be a boolean");
  return Object.freeze({
    maxQuantityPerLine: positive("maxQuantityPerLine"),
    maxUnitsPerOrder: positive("maxUnitsPerOrder"),
    blockedSubscriptionStatuses: Object.freeze([...blocked]) as readonly SubscriptionState[],
    enforcePlanMaxOrderValue: enforce,
  });
}

interface OrderRule {
  readonly id: string;
  check(config: RulesConfig, order: OrderFacts): Violation | undefined;
}

interface BillingRule {
  readonly id: string;
  check(config: RulesConfig, order: OrderFacts, billing: BillingFacts): Violation | undefined;
}

// Rules that need only the order: checked first, so a bad order never costs a call to billing.
const orderRules: readonly OrderRule[] = [
  {
    id: "quantity.per_line",
    check: (config, order) => {
      const line = order.lines.find((l) => l.quantity > config.maxQuantityPerLine);
      return line
        ? violation(
            "quantity.per_line",
            Code.InvalidArgument,
            `at most ${config.maxQuantityPerLine} units per product`,
          )
        : undefined;
    },
  },
  {
    id: "quantity.per_order",
    check: (config, order) => {
      const units = order.lines.reduce((sum, l) => sum + l.quantity, 0);
      return units > config.maxUnitsPerOrder
        ? violation(
            "quantity.per_order",
            Code.InvalidArgument,
            `at most ${config.maxUnitsPerOrder} units per order`,
          )
        : undefined;
    },
  },
];

const billingRules: readonly BillingRule[] = [
  {
    id: "subscription.status",
    check: (config, _order, billing) =>
      config.blockedSubscriptionStatuses.includes(billing.subscription)
        ? violation(
            "subscription.status",
            Code.FailedPrecondition,
            `no new orders while the subscription is ${billing.subscription}`,
          )
        : undefined,
  },
  {
    id: "order_value.plan_max",
    check: (config, order, billing) => {
      const max = billing.maxOrderValue;
      if (!config.enforcePlanMaxOrderValue || !max) return undefined;
      if (max.currency !== order.total.currency) {
        return violation(
          "order_value.plan_max",
          Code.FailedPrecondition,
          `the plan limits orders in ${max.currency}`,
        );
      }
      return order.total.amountMinor > max.amountMinor
        ? violation("order_value.plan_max", Code.FailedPrecondition, "order value exceeds the plan's maximum")
        : undefined;
    },
  },
];

function violation(rule: string, code: Code, message: string): Violation {
  return { rule, code, message };
}

/** Every rule the order alone breaks. */
export function checkOrder(config: RulesConfig, order: OrderFacts): Violation[] {
  return orderRules.map((r) => r.check(config, order)).filter((v): v is Violation => v !== undefined);
}

/** Every rule the order breaks given the tenant's billing. */
export function checkBilling(config: RulesConfig, order: OrderFacts, billing: BillingFacts): Violation[] {
  return billingRules
    .map((r) => r.check(config, order, billing))
    .filter((v): v is Violation => v !== undefined);
}

/** Whether the order-value and subscription rules need the tenant's billing status at all. */
export function needsBilling(config: RulesConfig): boolean {
  return config.enforcePlanMaxOrderValue || config.blockedSubscriptionStatuses.length > 0;
}

/** Throws the first violation as a ConnectError with its code (the rule id in the message). */
export function enforce(violations: readonly Violation[]): void {
  const first = violations[0];
  if (first) throw new ConnectError(`${first.rule}: ${first.message}`, first.code);
}
