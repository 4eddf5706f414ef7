import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type AttachedCard,
  type ChargeInput,
  type ChargeOutcome,
  IdempotencyMismatchError,
  type PaymentProvider,
  ProviderTimeoutError,
  type RefundInput,
  type RefundOutcome,
  UnknownPaymentMethodError,
} from "./provider.ts";

/** How each sandbox token behaves when charged. */
export const SANDBOX_CARDS: Readonly<
  Record<
    string,
    { brand: string; last4: string; outcome: "succeed" | "card_declined" | "insufficient_funds" | "timeout" }
  >
> = {
  pm_card_visa: { brand: "visa", last4: "4242", outcome: "succeed" },
  pm_card_mastercard: { brand: "mastercard", last4: "4444", outcome: "succeed" },
  pm_card_declined: { brand: "visa", last4: "0002", outcome: "card_declined" },
  pm_card_insufficient_funds: { brand: "visa", last4: "9995", outcome: "insufficient_funds" },
  pm_card_timeout: { brand: "visa", last4: "0119", outcome: "timeout" },
};

/** Options of {@link createSandboxProvider}. */
export interface SandboxOptions {
  /** How long a pm_card_timeout charge hangs before it times out (default 50 ms; tests use less). */
  readonly timeoutMs?: number;
  /** How long an idempotency key is remembered (default 24 h, as real providers keep them). */
  readonly keyTtlMs?: number;
  /** The clock keys expire by (tests move it). */
  readonly now?: () => number;
}

/** Idempotency keys with what they answered, forgotten keyTtlMs after their first use. */
function keyStore<V>(ttlMs: number, now: () => number) {
  // A Map iterates in insertion order, which is expiry order: expired keys are dropped from the front.
  const entries = new Map<string, { value: V; expiresAt: number }>();
  const prune = (at: number) => {
    for (const [key, entry] of entries) {
      if (entry.expiresAt > at) break;
      entries.delete(key);
    }
  };
  return {
    get(key: string): V | undefined {
      const at = now();
      prune(at);
      return entries.get(key)?.value;
    },
    set(key: string, value: V): void {
      entries.set(key, { value, expiresAt: now() + ttlMs });
    },
    get size() {
      return entries.size;
    },
  };
}

/** The sandbox provider plus what tests count. */
export interface SandboxProvider extends PaymentProvider {
  /** Charge calls received, repeats included. */
  readonly chargeCalls: number;
  /** Charges that moved money (succeeded), each idempotency key once. */
  readonly chargesTaken: number;
  /** Refunds that moved money. */
  readonly refundsMade: number;
  /** Idempotency keys remembered now (charges and refunds). */
  readonly keysHeld: number;
}

/**
 * An in-memory provider that behaves like a real one: test tokens succeed, decline, lack funds or
 * time out; it remembers each idempotency key with its first outcome for keyTtlMs (24 h), so a
 * retry never charges twice, and a key reused with other parameters is refused; older keys are
 * forgotten, as a real provider forgets them, so the keys do not pile up in a long-running sandbox
 * (what it keeps per succeeded charge, its amount for refunds, stays, as a provider's records do).
 */
export function createSandboxProvider(options: SandboxOptions = {}): SandboxProvider {
  const timeoutMs = options.timeoutMs ?? 50;
  const keyTtlMs = options.keyTtlMs ?? 24 * 3_600_000;
  const now = options.now ?? Date.now;
  const charges = keyStore<{ fingerprint: string; outcome: ChargeOutcome }>(keyTtlMs, now);
  const refunds = keyStore<{ fingerprint: string; outcome: RefundOutcome }>(keyTtlMs, now);
  const refundedByCharge = new Map<string, bigint>();
  const amountByCharge = new Map<string, bigint>();
  let chargeCalls = 0;
  let chargesTaken = 0;
  let refundsMade = 0;
  const token = (prefix: string) => `${prefix}_sandbox_${randomBytes(10).toString("hex")}`;

  return {
    name: "sandbox",
    get chargeCalls() {
      return chargeCalls;
    },
    get chargesTaken() {
      return chargesTaken;
    },
    get refundsMade() {
      return refundsMade;
    },
    get keysHeld() {
      return charges.size + refunds.size;
    },
    isToken: (text) => text in SANDBOX_CARDS,
    async attach(input): Promise<AttachedCard> {
      const card = SANDBOX_CARDS[input.token];
      if (!card) throw new UnknownPaymentMethodError("unknown sandbox token");
      return { ref: input.token, brand: card.brand, last4: card.last4, expMonth: 12, expYear: 2034 };
    },
    async charge(input: ChargeInput): Promise<ChargeOutcome> {
      chargeCalls++;
      const fingerprint = `${input.amountMinor}:${input.currency}:${input.paymentMethodRef}`;
      const seen = charges.get(input.idempotencyKey);
      if (seen) {
        if (seen.fingerprint !== fingerprint) throw new IdempotencyMismatchError("idempotency key reused");
        return seen.outcome;
      }
      const card = SANDBOX_CARDS[input.paymentMethodRef];
      if (!card) throw new UnknownPaymentMethodError("unknown sandbox payment method");
      if (card.outcome === "timeout") {
        // Bounded: the sandbox never hangs longer than timeoutMs, and nothing is remembered.
        await sleep(timeoutMs);
        throw new ProviderTimeoutError("sandbox provider timed out");
      }
      const providerChargeId = token("ch");
      const outcome: ChargeOutcome =
        card.outcome === "succeed"
          ? { status: "succeeded", providerChargeId }
          : {
              status: "failed",
              providerChargeId,
              code: card.outcome,
              message:
                card.outcome === "card_declined"
                  ? "Your card was declined."
                  : "Your card has insufficient funds.",
            };
      charges.set(input.idempotencyKey, { fingerprint, outcome });
      if (outcome.status === "succeeded") {
        chargesTaken++;
        amountByCharge.set(providerChargeId, input.amountMinor);
      }
      return outcome;
    },
    async refund(input: RefundInput): Promise<RefundOutcome> {
      const fingerprint = `${input.providerChargeId}:${input.amountMinor}:${input.currency}`;
      const seen = refunds.get(input.idempotencyKey);
      if (seen) {
        if (seen.fingerprint !== fingerprint) throw new IdempotencyMismatchError("idempotency key reused");
        return seen.outcome;
      }
      const charged = amountByCharge.get(input.providerChargeId);
      const refunded = refundedByCharge.get(input.providerChargeId) ?? 0n;
      if (charged === undefined || refunded + input.amountMinor > charged) {
        throw new Error("sandbox refund exceeds the charge");
      }
      refundedByCharge.set(input.providerChargeId, refunded + input.amountMinor);
      const outcome = { providerRefundId: token("re") };
      refunds.set(input.idempotencyKey, { fingerprint, outcome });
      refundsMade++;
      return outcome;
    },
  };
}
