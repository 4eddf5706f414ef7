import { Code, ConnectError } from "@connectrpc/connect";
import { sha256 } from "./secrets.ts";
import type { Queries } from "./store.ts";

/** Limits of the sign-in throttle. */
export interface ThrottleSettings {
  /** Failures within the window that lock an account. */
  readonly maxFailuresPerAccount: number;
  /** Failures within the window that lock a client address. */
  readonly maxFailuresPerAddress: number;
  /** A count restarts after this long without failures. */
  readonly windowMs: number;
  /** First lock; it doubles with each further failure. */
  readonly lockMs: number;
  readonly maxLockMs: number;
}

/** Counts failed sign-ins per account and per client address, in the database, and locks them out. */
export interface Throttle {
  /**
   * Throws resource_exhausted (with retry-after) while the account or the address is locked;
   * otherwise says whether the account has failures on record (succeed() then has work to do).
   */
  check(email: string, ipAddress: string): Promise<{ readonly accountFailures: boolean }>;
  /** Counts a failure against the account and the address. */
  fail(email: string, ipAddress: string): Promise<void>;
  /** Clears the account's count after a successful sign-in (an address's count only decays). */
  succeed(email: string): Promise<void>;
}

// Emails are hashed: counters also exist for addresses that have no account.
const accountKey = (email: string) => `acct:${sha256(email).toString("hex")}`;
const addressKey = (ip: string) => `addr:${ip}`;

/** Creates the throttle over the store's login_throttle table. */
export function createThrottle(store: Queries, s: ThrottleSettings): Throttle {
  const keys = (email: string, ip: string) =>
    ip ? [accountKey(email), addressKey(ip)] : [accountKey(email)];
  return {
    async check(email, ip) {
      const rows = await store.throttleRows(keys(email, ip));
      const until = Math.max(0, ...rows.map((r) => r.lockedUntil?.getTime() ?? 0));
      if (until === 0) return { accountFailures: rows.some((r) => r.key === accountKey(email)) };
      const seconds = Math.max(1, Math.ceil((until - Date.now()) / 1000));
      throw new ConnectError("too many failed sign-ins; try again later", Code.ResourceExhausted, {
        "retry-after": String(seconds),
      });
    },
    async fail(email, ip) {
      const common = { windowMs: s.windowMs, lockMs: s.lockMs, maxLockMs: s.maxLockMs };
      await store.recordFailure(accountKey(email), { ...common, maxFailures: s.maxFailuresPerAccount });
      if (ip) await store.recordFailure(addressKey(ip), { ...common, maxFailures: s.maxFailuresPerAddress });
    },
    async succeed(email) {
      await store.clearFailures(accountKey(email));
    },
  };
}
