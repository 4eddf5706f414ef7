import { type ConfigSource, env, kitConfigSchema, loadConfig } from "@trellis/kit/config.js";

function parseRetryDays(raw: string): readonly number[] {
  const days = raw.split(",").map((part) => part.trim());
  if (days.some((d) => !/^\d+$/.test(d))) throw new Error("a comma-separated list of whole days, e.g. 1,3,5");
  const numbers = days.map(Number);
  if (numbers.some((d, i) => d < 1 || (i > 0 && d <= (numbers[i - 1] ?? 0)))) {
    throw new Error("days must be at least 1 and increasing");
  }
  return numbers;
}

/** Billing's environment variables: the kit's, plus its own. */
export function billingConfigSchema() {
  return {
    ...kitConfigSchema(8003),
    /** Tax rate in basis points applied when an invoice is finalized (1900 = 19%). */
    BILLING_TAX_RATE_BPS: env.int({ default: 0, min: 0, max: 10_000 }),
    /** Days after finalization on which a failed invoice payment is retried; then uncollectible. */
    BILLING_DUNNING_RETRY_DAYS: env.custom(parseRetryDays, { default: [1, 3, 5] }),
    /** Payment provider; the sandbox is the only one this build ships. */
    BILLING_PAYMENT_PROVIDER: env.enum(["sandbox"], { default: "sandbox" }),
    /** How long the sandbox's pm_card_timeout hangs before timing out. */
    BILLING_SANDBOX_TIMEOUT_MS: env.duration({ default: 50, min: 0, max: 30_000 }),
    /** How often due work (renewals, dunning) is run on the wall clock; 0 turns the scheduler off. */
    BILLING_SCHEDULER_INTERVAL_MS: env.duration({ default: 60_000, min: 0 }),
    /** JetStream stream billing publishes to. */
    BILLING_STREAM: env.string({ default: "BILLING" }),
    /** JetStream stream auth publishes tenant.created to. */
    AUTH_STREAM: env.string({ default: "AUTH" }),
    /** Seller name printed on invoice documents. */
    BILLING_SELLER_NAME: env.string({ default: "Trellis" }),
  };
}

/** Billing's parsed, frozen configuration. */
export type BillingConfig = ReturnType<typeof loadBillingConfig>;

/** Reads billing's configuration from source; throws one ConfigError naming every bad variable. */
export function loadBillingConfig(source: ConfigSource) {
  return loadConfig(billingConfigSchema(), source);
}
