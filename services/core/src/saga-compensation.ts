import { Code } from "@connectrpc/connect";
import type { ChargeOutcome } from "./billing.js";
import { refundKey } from "./ids.js";
import { isTerminal } from "./order-state.js";
import { chargeOnce } from "./saga-steps.js";
import {
  backoffMs,
  codeOf,
  guarded,
  proceed,
  refusals,
  type StepDeps,
  type StepResult,
} from "./saga-support.js";
import { getOrder, recordStep, releaseReservations, type SagaRow, setOrderStatus } from "./store.js";

// Compensations retry until they succeed: a retryable failure only postpones them.
async function postpone(d: StepDeps, saga: SagaRow, step: string, error: unknown): Promise<StepResult> {
  const attempt = saga.attempts + 1;
  const at = new Date(Date.now() + backoffMs(d.timing, attempt));
  const detail = `${Code[codeOf(error)]}: ${error instanceof Error ? error.message : String(error)}`;
  d.logger.warn({ err: error, orderId: saga.order_id, step, attempt }, "compensation failed; will retry");
  await guarded(d, saga, (tx) =>
    recordStep(
      tx,
      saga.order_id,
      { attempts: attempt, next_attempt_at: at, last_error: detail },
      {
        step,
        outcome: "retry",
        detail,
        attempt,
      },
    ),
  );
  return { next: "wait", at };
}

/** Refunds the order's charge in full (key "order:<id>:refund"), then releases its stock. */
export async function refund(d: StepDeps, saga: SagaRow): Promise<StepResult> {
  let state: "refunded" | "failed" = "refunded";
  let detail = "";
  if (saga.charge_id) {
    try {
      await d.billing.refund(
        {
          tenantId: saga.tenant_id,
          chargeId: saga.charge_id,
          idempotencyKey: refundKey(saga.order_id),
          reason:
            saga.failure_reason === "cancelled"
              ? `order cancelled: ${saga.cancel_reason}`
              : saga.failure_reason,
        },
        { timeoutMs: d.timing.stepTimeoutMs },
      );
    } catch (error) {
      const code = codeOf(error);
      // Already fully refunded, or never succeeded: nothing is kept, so nothing is left to give back.
      if (code === Code.FailedPrecondition) detail = "nothing left to refund";
      else if (code === Code.NotFound) {
        state = "failed";
        detail = "billing does not know the charge";
        d.logger.error({ err: error, orderId: saga.order_id }, "refund of an unknown charge");
      } else return postpone(d, saga, "refund", error);
    }
  }
  d.persisted?.("refund-response");
  await guarded(d, saga, async (tx, _current, order) => {
    const finished = isTerminal(order.status);
    await recordStep(
      tx,
      saga.order_id,
      finished
        ? { charge_state: state, status: "compensated", step: "done", attempts: 0 }
        : { charge_state: state, step: "release", attempts: 0 },
      { step: "refund", outcome: state, detail },
    );
  });
  d.persisted?.("refund");
  return proceed;
}

/**
 * Releases the order's reservations and ends the order as cancelled (a cancellation) or failed
 * (anything else), publishing the event. A charge whose outcome is unknown is resolved next.
 */
export async function release(d: StepDeps, saga: SagaRow): Promise<StepResult> {
  await guarded(d, saga, async (tx, s, order) => {
    const released = await releaseReservations(tx, d.events, s.tenant_id, s.order_id);
    if (!isTerminal(order.status)) {
      if (s.failure_reason === "cancelled") {
        const refunded = s.charge_state === "refunded";
        const cancelled = await setOrderStatus(tx, order, "cancelled", {
          cancelReason: s.cancel_reason,
          note: refunded ? "cancelled and refunded" : "cancelled",
        });
        await d.events.orderCancelled(tx, cancelled, {
          previous: order.status,
          reason: s.cancel_reason,
          by: s.cancelled_by,
          refundedMinor: refunded ? order.total_minor : 0n,
        });
      } else {
        const failed = await setOrderStatus(tx, order, "failed", {
          failureReason: s.failure_reason,
          note: s.failure_reason,
        });
        await d.events.orderFailed(tx, failed, order.status, s.failure_reason);
      }
    }
    const unresolved = s.charge_state === "unknown" || s.charge_state === "pending";
    await recordStep(
      tx,
      s.order_id,
      unresolved
        ? { step: "resolve_charge", attempts: 0, charge_state: "unknown" }
        : { status: "compensated", step: "done" },
      { step: "release", outcome: "released", detail: `${released} reservations released` },
    );
  });
  d.persisted?.("release");
  return proceed;
}

/**
 * Finds out what became of a charge that was given up on without an answer, by asking for it
 * again with the same idempotency key: billing answers the first charge if there was one (then it
 * is refunded), or charges now (and it is refunded), or declines (nothing to do).
 */
export async function resolveCharge(d: StepDeps, saga: SagaRow): Promise<StepResult> {
  const order = (await getOrder(d.sql, saga.tenant_id, saga.order_id))?.order;
  if (!order) throw new Error(`order ${saga.order_id} of a saga is missing`);
  let outcome: ChargeOutcome;
  try {
    outcome = await chargeOnce(d, saga, order);
  } catch (error) {
    if (!refusals.has(codeOf(error))) return postpone(d, saga, "resolve_charge", error);
    outcome = { kind: "failed", chargeId: "", failureCode: "refused" };
  }
  await guarded(d, saga, (tx) =>
    recordStep(
      tx,
      saga.order_id,
      outcome.kind === "succeeded"
        ? { charge_state: "succeeded", charge_id: outcome.chargeId, step: "refund", attempts: 0 }
        : { charge_state: outcome.kind, status: "compensated", step: "done" },
      { step: "resolve_charge", outcome: outcome.kind },
    ),
  );
  return proceed;
}
