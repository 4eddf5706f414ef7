import type { Logger } from "pino";
import { catchUp } from "./clock.ts";
import type { EngineDeps } from "./payments-engine.ts";
import type { Store } from "./store.ts";

/** A running scheduler. */
export interface Scheduler {
  /** Runs one round now: due work of every tenant, expired idempotency keys purged. */
  tick(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Runs due billing work on the wall clock every intervalMs (renewals, trial ends, dunning), the
 * same steps AdvanceClock runs, so tenants whose clock nobody advances are billed on time.
 */
export function startScheduler(
  store: Store,
  deps: EngineDeps,
  logger: Logger,
  intervalMs: number,
): Scheduler {
  let running: Promise<void> | undefined;
  let stopped = false;
  const round = async () => {
    await store.purgeExpiredKeys();
    for (;;) {
      const tenants = await store.tenantsWithDueWork(100);
      if (tenants.length === 0 || stopped) return;
      for (const tenantId of tenants) {
        try {
          await catchUp(store, deps, tenantId);
        } catch (error) {
          logger.error({ err: error, tenantId }, "billing catch-up failed");
          return;
        }
      }
    }
  };
  const tick = () => {
    running ??= round()
      .catch((error: unknown) => logger.error({ err: error }, "billing scheduler round failed"))
      .finally(() => {
        running = undefined;
      });
    return running;
  };
  const timer = intervalMs > 0 ? setInterval(() => void tick(), intervalMs) : undefined;
  timer?.unref();
  return {
    tick,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
