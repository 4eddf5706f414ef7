import { closePeriod, retryInvoice, type StepCounts, zeroCounts } from "./lifecycle.ts";
import type { EngineDeps } from "./payments-engine.ts";
import type { Queries, Store } from "./store.ts";

/** The tenant's billing time: the wall clock, or later where AdvanceClock moved it. */
export async function clockNow(s: Pick<Queries, "clockSetting">, tenantId: string): Promise<Date> {
  const setting = await s.clockSetting(tenantId);
  const wall = Date.now();
  return new Date(setting && setting.getTime() > wall ? setting.getTime() : wall);
}

// A runaway loop would mean a step that does not move time or state forward: fail loudly instead.
const MAX_STEPS = 100_000;

/**
 * Runs every due item of the tenant's billing (period ends, trial ends, dunning retries, scheduled
 * cancellations) in time order up to `to`, one transaction per item under the tenant's lock, moving
 * the tenant's clock to each item's time and finally to `to` (never backwards). Re-running it, or
 * running it concurrently, does nothing twice: each step re-checks what is due under the lock.
 */
export async function advanceTenant(
  store: Store,
  deps: EngineDeps,
  tenantId: string,
  to: Date,
  { setClock = true } = {},
): Promise<StepCounts> {
  const counts = zeroCounts();
  for (let step = 0; step < MAX_STEPS; step++) {
    const done = await store.transaction(async (s, tx) => {
      await s.lockCustomer(tenantId);
      const item = await s.nextDue(tenantId, to);
      if (!item) {
        if (setClock) await s.moveClock(tenantId, to);
        return true;
      }
      await s.moveClock(tenantId, item.at);
      if (item.kind === "retry") {
        await retryInvoice(s, tx, deps, item.id, tenantId, counts);
      } else {
        const sub = await s.getSubscription(tenantId, item.id, true);
        if (sub && sub.status !== "canceled" && sub.current_period_end.getTime() === item.at.getTime()) {
          await closePeriod(s, tx, deps, sub, counts);
        }
      }
      return false;
    });
    if (done) return counts;
  }
  throw new Error(`billing clock of ${tenantId} did not settle after ${MAX_STEPS} steps`);
}

/** Runs whatever is due at the tenant's current time (before a change that depends on the period). */
export async function catchUp(store: Store, deps: EngineDeps, tenantId: string): Promise<Date> {
  const now = await clockNow(store, tenantId);
  // Due work only: the clock itself keeps following the wall clock (no row written).
  await advanceTenant(store, deps, tenantId, now, { setClock: false });
  return now;
}
