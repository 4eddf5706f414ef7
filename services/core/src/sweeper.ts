import type { Db } from "@trellis/kit/db.js";
import type { Logger } from "@trellis/kit/logger.js";
import type { CoreEvents } from "./events.js";
import {
  loadSaga,
  lockOrder,
  ordersWithExpiredReservations,
  recordStep,
  releaseReservations,
} from "./store.js";

/** A running reservation sweeper. */
export interface Sweeper {
  /** Releases every expired reservation now; returns how many orders had some. */
  sweep(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Every intervalMs, returns the units of expired held reservations to available stock and wakes
 * their sagas, which then fail the order (refunding a charge that lands after the expiry).
 * Reservations of paid orders are committed and never expire.
 */
export function startReservationSweeper(options: {
  sql: Db;
  events: CoreEvents;
  logger: Logger;
  intervalMs: number;
  onReleased: (orderId: string) => void;
}): Sweeper {
  const { sql, events, logger } = options;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let current: Promise<number> | undefined;

  const sweepOnce = async () => {
    let orders = 0;
    for (const { tenant_id: tenantId, order_id: orderId } of await ordersWithExpiredReservations(sql, 100)) {
      // Order row, then saga row: the same lock order as the saga's steps and CancelOrder.
      const released = await sql.begin(async (tx) => {
        await lockOrder(tx, tenantId, orderId);
        const saga = await loadSaga(tx, orderId, true);
        const n = await releaseReservations(tx, events, tenantId, orderId, { onlyExpired: true });
        if (n > 0 && saga) {
          await recordStep(
            tx,
            orderId,
            {},
            { step: "sweeper", outcome: "reservations_expired", detail: `${n}` },
          );
        }
        return n;
      });
      if (released > 0) {
        orders++;
        logger.info({ orderId, released }, "expired reservations released");
        options.onReleased(orderId);
      }
    }
    return orders;
  };

  const sweep = () => {
    current ??= sweepOnce().finally(() => {
      current = undefined;
    });
    return current;
  };

  const tick = () => {
    sweep()
      .catch((error) => logger.warn({ err: error }, "reservation sweep failed"))
      .finally(() => {
        if (!stopped) timer = setTimeout(tick, options.intervalMs).unref();
      });
  };
  timer = setTimeout(tick, options.intervalMs).unref();

  return {
    sweep,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await current?.catch(() => {});
    },
  };
}
