import { type ConfigSource, env, loadConfig } from "@trellis/kit/config.js";
import { parseRules, type RulesConfig } from "./rules.js";

/** Points of the saga right after which CORE_SAGA_CRASH_AFTER makes the process SIGKILL itself. */
export const crashPoints = [
  "reserve",
  "charge-attempt",
  "charge-response",
  "charge",
  "confirm",
  "refund-response",
  "refund",
  "release",
] as const;

/** A saga crash point (see crashPoints). */
export type CrashPoint = (typeof crashPoints)[number];

/** Core's own variables (the kit's PORT, DATABASE_URL, NATS_URL, TLS_* … are read by the kit). */
export function coreConfigSchema() {
  return {
    /**
     * Billing's gRPC endpoint; https://… (mTLS as "core") when TLS_* is configured, http://… otherwise.
     * Default: port 8003 on 127.0.0.1 with the scheme TLS implies.
     */
    BILLING_URL: env.url({ optional: true, protocols: ["http", "https"] }),
    /**
     * Dev and tests only: send `x-forwarded-client-cert: URI=spiffe://…/sa/core` to a billing that
     * runs without TLS and with TRUST_FORWARDED_IDENTITY=true. Never set it behind a real mesh.
     */
    BILLING_FORWARDED_IDENTITY: env.bool({ default: false }),
    /** How long a reservation is held before the sweeper releases it (its saga then fails). */
    CORE_RESERVATION_TTL: env.duration({ default: 15 * 60_000, min: 1 }),
    /** How often the sweeper looks for expired reservations. */
    CORE_SWEEP_INTERVAL: env.duration({ default: 10_000, min: 10 }),
    /** How often due sagas (retries, sagas of a crashed instance) are looked for. */
    CORE_SAGA_POLL_INTERVAL: env.duration({ default: 1000, min: 10 }),
    /** Deadline of one Charge, Refund or probe call to billing. */
    CORE_SAGA_STEP_TIMEOUT: env.duration({ default: 5000, min: 10 }),
    /** Charge attempts (retryable failures) before the saga gives up and compensates. */
    CORE_SAGA_CHARGE_ATTEMPTS: env.int({ default: 4, min: 1, max: 1000 }),
    /** First retry delay; doubles per attempt, with jitter, up to CORE_SAGA_RETRY_MAX. */
    CORE_SAGA_RETRY_BASE: env.duration({ default: 200, min: 1 }),
    CORE_SAGA_RETRY_MAX: env.duration({ default: 30_000, min: 1 }),
    /** Sagas one instance runs at once. */
    CORE_SAGA_CONCURRENCY: env.int({ default: 64, min: 1, max: 10_000 }),
    /** How long CreateOrder and CancelOrder wait for the saga before answering the current state. */
    CORE_ORDER_WAIT: env.duration({ default: 3000, min: 0 }),
    /** How long a tenant's billing status is cached when no subscription event invalidates it. */
    CORE_BILLING_STATUS_TTL: env.duration({ default: 60_000, min: 0 }),
    /** Business rules as JSON, overriding the defaults key by key (see rules.ts). */
    CORE_RULES: env.custom<RulesConfig>((raw) => parseRules(JSON.parse(raw)), { optional: true }),
    /** Tests only: SIGKILL the process right after the saga persisted this point. */
    CORE_SAGA_CRASH_AFTER: env.enum(crashPoints, { optional: true }),
  };
}

/** Core's parsed configuration. */
export type CoreConfig = ReturnType<typeof loadCoreConfig>;

/** Reads core's variables once; throws a ConfigError naming every bad one. */
export function loadCoreConfig(source: ConfigSource) {
  const config = loadConfig(coreConfigSchema(), source);
  return { ...config, rules: config.CORE_RULES ?? parseRules({}) };
}
