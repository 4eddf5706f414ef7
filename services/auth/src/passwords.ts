import { availableParallelism } from "node:os";
import { Code, ConnectError } from "@connectrpc/connect";
import { hash, verify } from "@node-rs/argon2";

/** argon2id at the OWASP Password Storage Cheat Sheet parameters: 19 MiB, 2 passes, 1 lane. */
export const argon2Params = {
  // Algorithm.Argon2id; the package's enum is a const enum, which isolatedModules cannot inline.
  algorithm: 2,
  memoryCost: 19_456,
  timeCost: 2,
  parallelism: 1,
} as const;

/** Hashes and checks passwords off the event loop, a bounded number at a time. */
export interface PasswordHasher {
  hash(password: string): Promise<string>;
  /**
   * Checks password against storedHash, or against a dummy hash when there is none (unknown
   * account), so both cases cost the same; false in the dummy case.
   */
  verify(storedHash: string | undefined, password: string): Promise<boolean>;
  /** Hashes running now and waiting. */
  readonly load: { readonly running: number; readonly waiting: number };
}

/** Options of createPasswordHasher. */
export interface PasswordHasherOptions {
  /** Hashes at once; 0 = one fewer than the CPUs (at least 1), so the event loop keeps a core. */
  readonly concurrency?: number;
  /** Hashes allowed to wait; beyond that a sign-in gets resource_exhausted at once. */
  readonly maxQueue?: number;
}

/** The concurrency a hasher uses for the given option (0 = automatic). */
export function hashConcurrency(option = 0): number {
  return option > 0 ? option : Math.max(1, availableParallelism() - 1);
}

/**
 * A password hasher on @node-rs/argon2's async API (libuv thread pool). At most `concurrency`
 * hashes run at once: the pool is shared with WebCrypto (token signing and checks), which must
 * never wait behind a queue of 40 ms hashes.
 */
export async function createPasswordHasher(options: PasswordHasherOptions = {}): Promise<PasswordHasher> {
  const limit = hashConcurrency(options.concurrency);
  const maxQueue = options.maxQueue ?? 256;
  let running = 0;
  const waiting: Array<() => void> = [];

  const run = async <T>(work: () => Promise<T>): Promise<T> => {
    if (running >= limit) {
      if (waiting.length >= maxQueue)
        throw new ConnectError("too many sign-ins in progress", Code.ResourceExhausted);
      await new Promise<void>((resolve) => waiting.push(resolve));
    } else {
      running++;
    }
    try {
      return await work();
    } finally {
      // Hand the slot straight to the next waiter, so running never dips and rises again.
      const next = waiting.shift();
      if (next) next();
      else running--;
    }
  };

  const dummy = await hash("dummy password for unknown accounts", argon2Params);
  return {
    hash: (password) => run(() => hash(password, argon2Params)),
    async verify(storedHash, password) {
      const ok = await run(() => verify(storedHash ?? dummy, password).catch(() => false));
      return ok && storedHash !== undefined;
    },
    get load() {
      return { running, waiting: waiting.length };
    },
  };
}
