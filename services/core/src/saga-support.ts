// The saga's shared machinery: its dependencies, timing, guarded step transactions, backoff.
import { Code, ConnectError } from "@connectrpc/connect";
import type { Db } from "@trellis/kit/db.js";
import type { Logger } from "@trellis/kit/logger.js";
import type { BillingPort } from "./billing.js";
import type { CrashPoint } from "./config.js";
import type { CoreEvents } from "./events.js";
import { loadSaga, lockOrder, type OrderRow, type SagaPatch, type SagaRow, type Tx } from "./store.js";

/** Timing of the saga's steps. */
export interface SagaTiming {
  readonly reservationTtlMs: number;
  readonly stepTimeoutMs: number;
  readonly chargeAttempts: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
}

/** What the steps need. */
export interface StepDeps {
  readonly sql: Db;
  readonly events: CoreEvents;
  readonly billing: BillingPort;
  readonly logger: Logger;
  readonly timing: SagaTiming;
  /** Called right after a step's outcome is committed (the crash hook of the kill tests). */
  readonly persisted?: (point: CrashPoint) => void;
}

/** After a step: run the next step now, or wait until `at`. */
export type StepResult = { readonly next: "continue" } | { readonly next: "wait"; readonly at: Date };

/** Go on with the next step. */
export const proceed: StepResult = { next: "continue" };

/** Exponential backoff with jitter for the attempt-th retry (1-based). */
export function backoffMs(timing: SagaTiming, attempt: number): number {
  const ceiling = Math.min(timing.retryMaxMs, timing.retryBaseMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(ceiling * (0.5 + Math.random() * 0.5));
}

/** Codes with which billing refuses a request before charging: retrying cannot help, nothing was taken. */
export const refusals = new Set([
  Code.InvalidArgument,
  Code.FailedPrecondition,
  Code.NotFound,
  Code.PermissionDenied,
  Code.Unauthenticated,
  Code.AlreadyExists,
  Code.OutOfRange,
  Code.Unimplemented,
]);

/** The Connect code of an error (unknown for anything else). */
export function codeOf(error: unknown): Code {
  return error instanceof ConnectError ? error.code : Code.Unknown;
}

/**
 * Runs fn in a transaction holding the order row and then the saga row (always in that order, as
 * CancelOrder and the sweeper do), only if the saga is still at the status and step the caller
 * read: otherwise another runner got there first and nothing is done (returns false). The
 * transaction's statements share the step deadline, so a stuck lock fails the step, which is retried.
 */
export async function guarded(
  d: StepDeps,
  saga: SagaRow,
  fn: (tx: Tx, current: SagaRow, order: OrderRow) => Promise<void>,
): Promise<boolean> {
  return d.sql.begin(async (tx) => {
    // Pipelined in this order (queries run when executed): the timeout, the order row, the saga row.
    const [, order, current] = await Promise.all([
      tx`select set_config('statement_timeout', ${String(d.timing.stepTimeoutMs)}, true)`.execute(),
      lockOrder(tx, saga.tenant_id, saga.order_id),
      loadSaga(tx, saga.order_id, true),
    ]);
    if (!current || current.status !== saga.status || current.step !== saga.step) return false;
    await fn(tx, current, order);
    return true;
  });
}

/** The saga patch that turns it to compensation, starting with the release unless patch says otherwise. */
export function compensate(reason: string, patch: SagaPatch = {}): SagaPatch {
  return { status: "compensating", step: "release", attempts: 0, failure_reason: reason, ...patch };
}
