import { context, ROOT_CONTEXT } from "@opentelemetry/api";
import type { Db } from "@trellis/kit/db.js";
import { refund, release, resolveCharge } from "./saga-compensation.js";
import { charge, confirm, reserve } from "./saga-steps.js";
import { backoffMs, type StepDeps, type StepResult } from "./saga-support.js";
import { delaySaga, dueSagas, loadSaga, type SagaRow, sagaFinished } from "./store.js";

/** Runs CreateOrder sagas: on demand, when a retry is due, and on start for every unfinished one. */
export interface SagaRunner {
  /** Runs the order's saga in this process now (joins a run in progress); resolves when the run stops. */
  kick(orderId: string): Promise<void>;
  /** Starts the saga and waits until it is finished, waits for a retry, or timeoutMs passes. */
  settle(orderId: string, timeoutMs: number): Promise<void>;
  /** Kicks every unfinished saga that is due; returns how many (called on start: the resume). */
  resumeDue(): Promise<number>;
  /** Starts polling for due sagas. */
  start(): void;
  /** Stops polling and waits (up to graceMs) for the runs in progress. */
  stop(graceMs?: number): Promise<void>;
}

/** Options of createSagaRunner. */
export interface SagaRunnerOptions extends StepDeps {
  readonly pollIntervalMs: number;
  readonly concurrency: number;
  /**
   * Hold a session advisory lock per running saga on a dedicated connection (default true). Off for
   * a pool of one connection (PGlite), where that connection would be taken for good.
   */
  readonly instanceLocks?: boolean;
}

async function runStep(d: StepDeps, saga: SagaRow): Promise<StepResult> {
  switch (saga.step) {
    case "reserve":
      return reserve(d, saga);
    case "charge":
      return charge(d, saga);
    case "confirm":
      return confirm(d, saga);
    case "refund":
      return refund(d, saga);
    case "release":
      return release(d, saga);
    case "resolve_charge":
      return resolveCharge(d, saga);
    case "done":
      throw new Error(`saga ${saga.order_id} is ${saga.status} at step done`);
  }
}

// Cross-instance exclusion: a session advisory lock per saga on one dedicated connection, so a
// crashed instance's locks vanish with its connection. Steps are idempotent and guarded anyway;
// the lock only keeps two instances from doing the same work twice.
function createSagaLocks(sql: Db) {
  let conn: ReturnType<Db["reserve"]> | undefined;
  const key = (orderId: string) => `core.saga:${orderId}`;
  return {
    async tryLock(orderId: string): Promise<boolean> {
      try {
        conn ??= sql.reserve();
        const c = await conn;
        const [row] = await c<
          { ok: boolean }[]
        >`select pg_try_advisory_lock(hashtextextended(${key(orderId)}, 0)) as ok`;
        return row?.ok === true;
      } catch (error) {
        conn = undefined;
        throw error;
      }
    },
    async unlock(orderId: string): Promise<void> {
      const c = await conn?.catch(() => undefined);
      if (c) await c`select pg_advisory_unlock(hashtextextended(${key(orderId)}, 0))`.catch(() => {});
    },
    async close(): Promise<void> {
      const c = await conn?.catch(() => undefined);
      c?.release();
    },
  };
}

const noLocks = {
  tryLock: async (_orderId: string) => true,
  unlock: async (_orderId: string) => {},
  close: async () => {},
};

/** Creates the saga runner; nothing runs until kick, resumeDue or start. */
export function createSagaRunner(options: SagaRunnerOptions): SagaRunner {
  const { sql, logger } = options;
  const running = new Map<string, Promise<void>>();
  const timers = new Map<string, NodeJS.Timeout>();
  const waiting: Array<() => void> = [];
  const locks = options.instanceLocks === false ? noLocks : createSagaLocks(sql);
  let active = 0;
  let stopped = false;
  let poller: NodeJS.Timeout | undefined;

  const acquire = async () => {
    if (active >= options.concurrency) await new Promise<void>((resolve) => waiting.push(resolve));
    active++;
  };
  const releaseSlot = () => {
    active--;
    waiting.shift()?.();
  };

  const schedule = (orderId: string, delayMs: number) => {
    if (stopped || delayMs > 10 * options.pollIntervalMs) return; // the poller will find it
    clearTimeout(timers.get(orderId));
    const timer = setTimeout(
      () => {
        timers.delete(orderId);
        void kick(orderId);
      },
      Math.max(0, delayMs),
    );
    timer.unref();
    timers.set(orderId, timer);
  };

  const run = async (orderId: string) => {
    await acquire();
    try {
      if (stopped || !(await locks.tryLock(orderId))) return;
      try {
        for (let failures = 0; !stopped; ) {
          const saga = await loadSaga(sql, orderId);
          if (!saga || sagaFinished(saga.status)) return;
          const wait = saga.next_attempt_at.getTime() - Date.now();
          if (wait > 0) return schedule(orderId, wait);
          try {
            const result = await runStep(options, saga);
            if (result.next === "wait") return schedule(orderId, result.at.getTime() - Date.now());
            failures = 0;
          } catch (error) {
            failures++;
            const delay = backoffMs(options.timing, failures);
            logger.warn(
              { err: error, orderId, step: saga.step },
              "saga step failed unexpectedly; will retry",
            );
            const message = error instanceof Error ? error.message : String(error);
            await delaySaga(sql, orderId, new Date(Date.now() + delay), message).catch(() => {});
            return schedule(orderId, delay);
          }
        }
      } finally {
        await locks.unlock(orderId);
      }
    } catch (error) {
      logger.warn({ err: error, orderId }, "saga run failed; the poller retries it");
    } finally {
      releaseSlot();
    }
  };

  function kick(orderId: string): Promise<void> {
    const current = running.get(orderId);
    if (current) return current;
    // A saga outlives the request that started it: detach it from the request's deadline and trace.
    const started = context.with(ROOT_CONTEXT, () => run(orderId)).finally(() => running.delete(orderId));
    running.set(orderId, started);
    return started;
  }

  const resumeDue = async () => {
    let count = 0;
    for (let after = ""; !stopped; ) {
      const ids = await dueSagas(sql, 500, after);
      for (const id of ids) void kick(id);
      count += ids.length;
      const last = ids.at(-1);
      if (ids.length < 500 || last === undefined) break;
      after = last;
    }
    return count;
  };

  return {
    kick,
    async settle(orderId, timeoutMs) {
      // The saga starts now even when the caller does not wait for it.
      void kick(orderId);
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<void>((resolve) => {
          timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
        });
        await Promise.race([kick(orderId), timeout]).finally(() => clearTimeout(timer));
        const saga = await loadSaga(sql, orderId);
        if (!saga || sagaFinished(saga.status) || saga.next_attempt_at.getTime() > Date.now()) return;
        // Another instance holds the saga: give it a moment before looking again.
        if (!running.has(orderId)) await new Promise((r) => setTimeout(r, 20));
      }
    },
    resumeDue,
    start() {
      const tick = () => {
        resumeDue()
          .catch((error) => logger.warn({ err: error }, "polling due sagas failed"))
          .finally(() => {
            if (!stopped) poller = setTimeout(tick, options.pollIntervalMs).unref();
          });
      };
      poller = setTimeout(tick, options.pollIntervalMs).unref();
    },
    async stop(graceMs = 5000) {
      stopped = true;
      clearTimeout(poller);
      for (const timer of timers.values()) clearTimeout(timer);
      for (const resolve of waiting.splice(0)) resolve();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...running.values()]),
        new Promise((resolve) => {
          timer = setTimeout(resolve, graceMs);
        }),
      ]);
      clearTimeout(timer);
      await locks.close();
    },
  };
}
