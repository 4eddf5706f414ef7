/** Interval names as stored; the contract's PlanInterval maps onto them. */
export type Interval = "month" | "year";

/**
 * a × b / c rounded half up on the magnitude (2.5 → 3, −2.5 → −3), in integers only.
 * This is the one rounding rule of billing: tax and every proration line use it.
 */
export function mulDivRoundHalfUp(a: bigint, b: bigint, c: bigint): bigint {
  if (c <= 0n) throw new RangeError("divisor must be positive");
  const product = a * b;
  const negative = product < 0n;
  const magnitude = negative ? -product : product;
  const rounded = (magnitude * 2n + c) / (2n * c);
  return negative ? -rounded : rounded;
}

/** Tax on a subtotal at rate basis points (1900 = 19%), rounded half up; zero on a negative subtotal. */
export function taxFor(subtotalMinor: bigint, rateBps: number): bigint {
  if (subtotalMinor <= 0n || rateBps <= 0) return 0n;
  return mulDivRoundHalfUp(subtotalMinor, BigInt(rateBps), 10_000n);
}

/** What a mid-period plan change puts on the next invoice. */
export interface Proration {
  /** Credit for the unused part of the old plan: zero or negative. */
  readonly creditMinor: bigint;
  /** Charge for the new plan over the rest of the period: zero or positive. */
  readonly chargeMinor: bigint;
  /** creditMinor + chargeMinor. */
  readonly netMinor: bigint;
}

/** Inputs of {@link prorate}; times are epoch milliseconds. */
export interface ProrationInput {
  /** Price the old plan charged for the current period. */
  readonly oldAmountMinor: bigint;
  /** Price of the new plan for one of its intervals. */
  readonly newAmountMinor: bigint;
  readonly periodStartMs: number;
  readonly periodEndMs: number;
  /** When the change takes effect, within the period. */
  readonly changeAtMs: number;
  /** Length of one new-plan interval counted from the period start (equals the period for the same interval). */
  readonly newIntervalMs: number;
}

/**
 * Proration by time, to the millisecond: credit = −round(old × remaining / period) and
 * charge = round(new × remaining / newInterval), each rounded half up on its magnitude to a minor
 * unit by itself; the net is the sum of the two rounded lines.
 */
export function prorate(input: ProrationInput): Proration {
  const period = BigInt(input.periodEndMs - input.periodStartMs);
  const remainingMs = Math.min(
    Math.max(input.periodEndMs - input.changeAtMs, 0),
    input.periodEndMs - input.periodStartMs,
  );
  const remaining = BigInt(remainingMs);
  if (period <= 0n || remaining === 0n) return { creditMinor: 0n, chargeMinor: 0n, netMinor: 0n };
  const creditMinor = -mulDivRoundHalfUp(input.oldAmountMinor, remaining, period);
  const chargeMinor = mulDivRoundHalfUp(input.newAmountMinor, remaining, BigInt(input.newIntervalMs));
  return { creditMinor, chargeMinor, netMinor: creditMinor + chargeMinor };
}

/** Digits after the decimal point of a currency (2 for USD, 0 for JPY), from the platform's ICU data. */
export function currencyExponent(currency: string): number {
  try {
    return (
      new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits ??
      2
    );
  } catch {
    return 2;
  }
}

/** "1,234.50 USD" from minor units, by string arithmetic (no float on the way). */
export function formatMoney(amountMinor: bigint, currency: string): string {
  const exponent = currencyExponent(currency);
  const negative = amountMinor < 0n;
  const digits = (negative ? -amountMinor : amountMinor).toString().padStart(exponent + 1, "0");
  const whole = digits.slice(0, digits.length - exponent).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const fraction = exponent > 0 ? `.${digits.slice(digits.length - exponent)}` : "";
  return `${negative ? "-" : ""}${whole}${fraction} ${currency}`;
}
