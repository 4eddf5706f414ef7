import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { OrderStatus } from "@trellis/gen/trellis/core/v1/core_pb.js";

/** Money as the contracts carry it: integer minor units and a currency code. */
export interface MoneyLike {
  readonly amountMinor: bigint;
  readonly currency: string;
}

/** Digits after the decimal point of a currency (2 for USD, 0 for JPY). */
export function fractionDigits(currency: string): number {
  try {
    return (
      new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits ??
      2
    );
  } catch {
    return 2;
  }
}

/** Formats money for people, e.g. "$12.50"; never goes through a float for the digits. */
export function formatMoney(money: MoneyLike | undefined, locale?: string): string {
  if (!money) return "—";
  const digits = fractionDigits(money.currency);
  const negative = money.amountMinor < 0n;
  const abs = negative ? -money.amountMinor : money.amountMinor;
  const scale = 10n ** BigInt(digits);
  const major = abs / scale;
  const minor = (abs % scale).toString().padStart(digits, "0");
  const text = digits > 0 ? `${major}.${minor}` : `${major}`;
  try {
    // Intl takes a decimal string exactly (no float rounding) in current engines.
    return new Intl.NumberFormat(locale, { style: "currency", currency: money.currency }).format(
      `${negative ? "-" : ""}${text}` as unknown as number,
    );
  } catch {
    return `${negative ? "-" : ""}${text} ${money.currency}`;
  }
}

/** Parses "12.5" in a currency to minor units (1250n); undefined when it is not an amount. */
export function parseMoney(text: string, currency: string): bigint | undefined {
  const digits = fractionDigits(currency);
  const m = /^(-)?(\d+)(?:[.,](\d*))?$/.exec(text.trim());
  if (!m) return undefined;
  const [, sign, whole = "0", frac = ""] = m;
  if (frac.length > digits) return undefined;
  const minor = BigInt(whole) * 10n ** BigInt(digits) + BigInt(frac.padEnd(digits, "0") || "0");
  return sign ? -minor : minor;
}

/** A timestamp as local date and time, or "—". */
export function formatTime(ts: Timestamp | undefined): string {
  if (!ts) return "—";
  return timestampDate(ts).toLocaleString();
}

/** A timestamp as a local date, or "—". */
export function formatDate(ts: Timestamp | undefined): string {
  if (!ts) return "—";
  return timestampDate(ts).toLocaleDateString();
}

/** An enum value's name without its prefix, for people: "PAST_DUE" → "past due". */
export function enumLabel(name: string | undefined): string {
  return (name ?? "unknown").toLowerCase().replace(/_/g, " ");
}

const orderLabels: Record<OrderStatus, string> = {
  [OrderStatus.UNSPECIFIED]: "unknown",
  [OrderStatus.PENDING]: "pending",
  [OrderStatus.RESERVED]: "stock reserved",
  [OrderStatus.PAID]: "paid",
  [OrderStatus.CONFIRMED]: "confirmed",
  [OrderStatus.FULFILLED]: "fulfilled",
  [OrderStatus.CANCELLED]: "cancelled",
  [OrderStatus.FAILED]: "failed",
};

/** An order status for people. */
export function orderStatusLabel(status: OrderStatus): string {
  return orderLabels[status] ?? "unknown";
}

/** Whether an order's saga has finished (no more status changes without a user action). */
export function orderSettled(status: OrderStatus): boolean {
  return (
    status === OrderStatus.CONFIRMED ||
    status === OrderStatus.FAILED ||
    status === OrderStatus.CANCELLED ||
    status === OrderStatus.FULFILLED
  );
}

const failureReasons: Record<string, string> = {
  card_declined: "The card was declined.",
  insufficient_funds: "The card has insufficient funds.",
  billing_unavailable: "The payment service did not answer; nothing was charged.",
  out_of_stock: "Not enough stock for this order.",
  reservation_expired: "The stock reservation expired before payment.",
  payment_refunded: "The payment was refunded.",
  payment_failed: "The payment failed.",
  cancelled: "The order was cancelled.",
};

/** An order's failure_reason as a sentence (unknown reasons are shown as they are). */
export function failureReasonText(reason: string): string {
  return failureReasons[reason] ?? reason.replace(/_/g, " ");
}

/** The sandbox payment methods billing accepts, with what each does when charged. */
export const sandboxCards: readonly { readonly token: string; readonly label: string }[] = [
  { token: "pm_card_visa", label: "Visa •••• 4242 (succeeds)" },
  { token: "pm_card_mastercard", label: "Mastercard •••• 4444 (succeeds)" },
  { token: "pm_card_declined", label: "Card declined" },
  { token: "pm_card_insufficient_funds", label: "Insufficient funds" },
  { token: "pm_card_timeout", label: "Provider times out" },
];
