import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { Code, ConnectError } from "@connectrpc/connect";

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
  /** Nice value of the hashing threads on Linux (default 4: below the event loop; 0 = same). */
  readonly nice?: number;
}

/** The concurrency a hasher uses for the given option (0 = automatic). */
export function hashConcurrency(option = 0): number {
  return option > 0 ? option : Math.max(1, availableParallelism() - 1);
}

/** What a hashing thread is asked to do. */
export type HashWork =
  | { readonly op: "hash"; readonly password: string; readonly params: typeof argon2Params }
  | { readonly op: "verify"; readonly hash: string; readonly password: string };

/** A job for a hashing thread (hash-worker.mjs). */
export type HashJob = HashWork & { readonly id: number };

/** A hashing thread's answer to one job. */
export type HashResult =
  | { readonly id: number; readonly value: string | boolean }
  | { readonly id: number; readonly error: string };

/**
 * A password hasher on `concurrency` worker threads running @node-rs/argon2's synchronous API, each
 * holding one job in hand and one queued, so a thread starts its next hash without waiting for the
 * event loop to hear the last one finished (on the libuv pool it waited, and a busy event loop left
 * the pool idle between hashes). Further jobs wait here, at most maxQueue of them; beyond that a
 * sign-in gets resource_exhausted at once. WebCrypto and the rest of the libuv pool are left alone.
 */
export async function createPasswordHasher(
  options: PasswordHasherOptions = {},
): Promise<PasswordHasher & { close(): Promise<void> }> {
  const threadCount = hashConcurrency(options.concurrency);
  const maxQueue = options.maxQueue ?? 256;
  const perThread = 2;
  type Pending = { job: HashJob; resolve: (v: string | boolean) => void; reject: (e: Error) => void };
  type Thread = { worker: Worker; inHand: Map<number, Pending> };
  const waiting: Pending[] = [];
  let nextId = 1;
  let closed = false;

  const dispatch = () => {
    for (const t of threads) {
      while (t.inHand.size < perThread && waiting.length > 0) {
        const p = waiting.shift() as Pending;
        if (t.inHand.size === 0) t.worker.ref();
        t.inHand.set(p.job.id, p);
        t.worker.postMessage(p.job);
      }
    }
  };
  // A thread that dies (it should not) fails the jobs it held and is replaced, so later sign-ins
  // are not posted to a dead thread.
  const spawn = (): Thread => {
    const t: Thread = {
      worker: new Worker(new URL("./hash-worker.mjs", import.meta.url), {
        workerData: { nice: options.nice ?? 4 },
      }),
      inHand: new Map(),
    };
    t.worker.on("message", (result: HashResult) => {
      const p = t.inHand.get(result.id);
      if (!p) return;
      t.inHand.delete(result.id);
      dispatch();
      if (t.inHand.size === 0) t.worker.unref();
      if ("error" in result) p.reject(new Error(result.error));
      else p.resolve(result.value);
    });
    t.worker.on("error", () => {});
    t.worker.on("exit", (code) => {
      for (const p of t.inHand.values()) p.reject(new Error(`password hashing thread exited (${code})`));
      t.inHand.clear();
      if (closed) return;
      threads[threads.indexOf(t)] = spawn();
      dispatch();
    });
    // A thread keeps the process alive only while it has jobs (unref after the listeners: adding
    // one refs the port again).
    t.worker.unref();
    return t;
  };
  const threads = Array.from({ length: threadCount }, spawn);
  const inHand = () => threads.reduce((n, t) => n + t.inHand.size, 0);
  const computing = () => threads.reduce((n, t) => n + Math.min(1, t.inHand.size), 0);
  // Jobs waiting for a hash: queued in a thread behind the one it computes, or here.
  const queued = () => inHand() - computing() + waiting.length;

  const run = (job: HashWork): Promise<string | boolean> => {
    if (closed) return Promise.reject(new ConnectError("password hasher is closed", Code.Unavailable));
    if (computing() >= threadCount && queued() >= maxQueue) {
      return Promise.reject(new ConnectError("too many sign-ins in progress", Code.ResourceExhausted));
    }
    return new Promise((resolve, reject) => {
      waiting.push({ job: { ...job, id: nextId++ }, resolve, reject });
      dispatch();
    });
  };

  const dummy = String(
    await run({ op: "hash", password: "dummy password for unknown accounts", params: argon2Params }),
  );
  return {
    hash: async (password) => String(await run({ op: "hash", password, params: argon2Params })),
    async verify(storedHash, password) {
      const ok = await run({ op: "verify", hash: storedHash ?? dummy, password });
      return ok === true && storedHash !== undefined;
    },
    get load() {
      return { running: computing(), waiting: queued() };
    },
    async close() {
      closed = true;
      await Promise.all(threads.map((t) => t.worker.terminate()));
    },
  };
}
