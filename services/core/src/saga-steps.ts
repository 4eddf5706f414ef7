import { Code } from "@connectrpc/connect";
import type { ChargeOutcome } from "./billing.js";
import { chargeKey } from "./ids.js";
import {
  backoffMs,
  codeOf,
  compensate,
  guarded,
  proceed,
  refusals,
  type StepDeps,
  type StepResult,
} from "./saga-support.js";
import {
  commitReservations,
  type OrderRow,
  OutOfStockError,
  orderItems,
  recordStep,
  releasedReservations,
  reserveItems,
  type SagaRow,
  setOrderStatus,
} from "./store.js";

// The saga's forward steps: reserve stock, charge through billing, confirm. Each one commits its
// outcome (and the next step) before returning, so a crash between steps resumes at the next one.

/** Reserves every line, or sends the saga to compensation (out_of_stock, or a cancellation). */
export async function reserve(d: StepDeps, saga: SagaRow): Promise<StepResult> {
  try {
    await guarded(d, saga, async (tx, current, order) => {
      if (current.cancel_requested) {
        await recordStep(tx, saga.order_id, compensate("cancelled"), {
          step: "reserve",
          outcome: "cancelled",
        });
        return;
      }
      const items = await orderItems(tx, saga.tenant_id, saga.order_id);
      await reserveItems(
        tx,
        d.events,
        saga.tenant_id,
        saga.order_id,
        items.map((i) => ({ productId: i.product_id, quantity: i.quantity })),
        d.timing.reservationTtlMs,
      );
      await Promise.all([
        setOrderStatus(tx, order, "reserved", { note: "stock reserved" }),
        recordStep(
          tx,
          saga.order_id,
          { step: "charge", attempts: 0 },
          { step: "reserve", outcome: "reserved" },
        ),
      ]);
    });
  } catch (error) {
    if (!(error instanceof OutOfStockError)) throw error;
    await guarded(d, saga, (tx) =>
      recordStep(tx, saga.order_id, compensate("out_of_stock"), {
        step: "reserve",
        outcome: "out_of_stock",
        detail: error.productId,
      }),
    );
  }
  d.persisted?.("reserve");
  return proceed;
}

/** One Charge of the order's total with the order's idempotency key. */
export async function chargeOnce(d: StepDeps, saga: SagaRow, order: OrderRow): Promise<ChargeOutcome> {
  return d.billing.charge(
    {
      tenantId: saga.tenant_id,
      amount: { amountMinor: order.total_minor, currency: order.currency },
      idempotencyKey: chargeKey(saga.order_id),
      paymentMethod: order.payment_method,
      orderId: saga.order_id,
    },
    { timeoutMs: d.timing.stepTimeoutMs },
  );
}

// Persists a successful charge: the order is paid and its units committed, unless a cancellation
// came in or the sweeper released the reservation meanwhile, in which case the money goes back.
async function paid(d: StepDeps, saga: SagaRow, chargeId: string): Promise<void> {
  await guarded(d, saga, async (tx, current, order) => {
    const expired = (await releasedReservations(tx, saga.tenant_id, saga.order_id)) > 0;
    const charged = { charge_state: "succeeded" as const, charge_id: chargeId };
    if (current.cancel_requested || expired) {
      const reason = current.cancel_requested ? "cancelled" : "reservation_expired";
      const patch = compensate(reason, { ...charged, step: chargeId ? "refund" : "release" });
      await recordStep(tx, saga.order_id, patch, {
        step: "charge",
        outcome: "charged_then_abandoned",
        detail: reason,
      });
      return;
    }
    await Promise.all([
      commitReservations(tx, saga.tenant_id, saga.order_id),
      setOrderStatus(tx, order, "paid", {
        paymentId: chargeId,
        note: chargeId ? "payment charged" : "nothing to charge",
      }),
      recordStep(
        tx,
        saga.order_id,
        { ...charged, step: "confirm", attempts: 0 },
        { step: "charge", outcome: "charged" },
      ),
    ]);
  });
}

/** One charge attempt, persisted before the call; retries, gives up or compensates by outcome. */
export async function charge(d: StepDeps, saga: SagaRow): Promise<StepResult> {
  const attempt = saga.attempts + 1;
  let order: OrderRow | undefined;
  let abandoned = false;
  const current = await guarded(d, saga, async (tx, s, o) => {
    order = o;
    const reason = s.cancel_requested
      ? "cancelled"
      : (await releasedReservations(tx, s.tenant_id, s.order_id)) > 0
        ? "reservation_expired"
        : undefined;
    if (reason) {
      abandoned = true;
      // A charge attempted before and never answered may have gone through: it must be resolved.
      const state = s.charge_state === "pending" ? "unknown" : s.charge_state;
      await recordStep(tx, s.order_id, compensate(reason, { charge_state: state }), {
        step: "charge",
        outcome: "abandoned",
        detail: reason,
      });
      return;
    }
    if (o.total_minor === 0n) return;
    await recordStep(
      tx,
      s.order_id,
      { attempts: attempt, charge_state: "pending" },
      {
        step: "charge",
        outcome: "attempt",
        attempt,
      },
    );
  });
  if (!current || abandoned || !order) return proceed;
  if (order.total_minor === 0n) {
    await paid(d, saga, "");
    d.persisted?.("charge");
    return proceed;
  }
  d.persisted?.("charge-attempt");
  const pending: SagaRow = { ...saga, attempts: attempt, charge_state: "pending" };

  let outcome: ChargeOutcome;
  try {
    outcome = await chargeOnce(d, saga, order);
  } catch (error) {
    const code = codeOf(error);
    const detail = `${Code[code]}: ${error instanceof Error ? error.message : String(error)}`;
    d.logger.warn({ err: error, orderId: saga.order_id, attempt }, "charge attempt failed");
    if (refusals.has(code)) {
      await guarded(d, pending, (tx) =>
        recordStep(
          tx,
          saga.order_id,
          compensate("payment_rejected", { charge_state: "failed", last_error: detail }),
          {
            step: "charge",
            outcome: "refused",
            detail,
            attempt,
          },
        ),
      );
    } else if (attempt >= d.timing.chargeAttempts) {
      await guarded(d, pending, (tx) =>
        recordStep(
          tx,
          saga.order_id,
          compensate("billing_unavailable", { charge_state: "unknown", last_error: detail }),
          {
            step: "charge",
            outcome: "gave_up",
            detail,
            attempt,
          },
        ),
      );
    } else {
      const at = new Date(Date.now() + backoffMs(d.timing, attempt));
      await guarded(d, pending, (tx) =>
        recordStep(
          tx,
          saga.order_id,
          { next_attempt_at: at, last_error: detail },
          {
            step: "charge",
            outcome: "retry",
            detail,
            attempt,
          },
        ),
      );
      return { next: "wait", at };
    }
    d.persisted?.("charge");
    return proceed;
  }
  d.persisted?.("charge-response");
  if (outcome.kind === "succeeded") {
    await paid(d, pending, outcome.chargeId);
  } else {
    const reason = outcome.kind === "failed" ? outcome.failureCode : "payment_refunded";
    const state = outcome.kind === "failed" ? "failed" : "refunded";
    await guarded(d, pending, (tx) =>
      recordStep(
        tx,
        saga.order_id,
        compensate(reason, { charge_state: state, charge_id: outcome.chargeId }),
        {
          step: "charge",
          outcome: outcome.kind,
          detail: reason,
          attempt,
        },
      ),
    );
  }
  d.persisted?.("charge");
  return proceed;
}

/** Confirms a paid order, unless a cancellation came in meanwhile. */
export async function confirm(d: StepDeps, saga: SagaRow): Promise<StepResult> {
  await guarded(d, saga, async (tx, current, order) => {
    if (current.cancel_requested) {
      const step = current.charge_id ? "refund" : "release";
      await recordStep(tx, saga.order_id, compensate("cancelled", { step }), {
        step: "confirm",
        outcome: "cancelled",
      });
      return;
    }
    const [confirmed, items] = await Promise.all([
      setOrderStatus(tx, order, "confirmed", { note: "order confirmed" }),
      orderItems(tx, saga.tenant_id, saga.order_id),
      recordStep(
        tx,
        saga.order_id,
        { status: "completed", step: "done" },
        { step: "confirm", outcome: "confirmed" },
      ),
    ]);
    const units = items.reduce((n, i) => n + i.quantity, 0);
    await d.events.orderConfirmed(tx, confirmed, units);
  });
  d.persisted?.("confirm");
  return proceed;
}
