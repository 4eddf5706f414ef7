import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BillingService,
  type Charge,
  type ChargeRequest,
  ChargeSchema,
  ChargeStatus,
  file_trellis_billing_v1_billing,
  PaymentFailureCode,
  RefundSchema,
  SubscriptionStatus,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { MoneySchema } from "@trellis/gen/trellis/common/v1/money_pb.js";
import { createAccessInterceptor } from "@trellis/kit/access.js";
import { callerServiceKey } from "@trellis/kit/context.js";
import { type RunningService, startService } from "@trellis/kit/server.js";
import { createValidationInterceptor } from "@trellis/kit/validation.js";
import pino from "pino";
import { Registry } from "prom-client";

/** What the scripted billing does with one call. */
export type Outcome =
  | "ok"
  | "decline"
  | "insufficient"
  | "unavailable"
  /** Charges, then answers unavailable as if the answer was lost on the way. */
  | "charge-then-unavailable"
  | { readonly delayMs: number; readonly then?: Outcome };

/** One charge the scripted billing holds, by idempotency key. */
export interface ScriptedCharge {
  readonly key: string;
  readonly chargeId: string;
  readonly tenantId: string;
  readonly amountMinor: bigint;
  status: "succeeded" | "failed" | "refunded";
  readonly caller: string | undefined;
}

/** Scripts per RPC: the outcome of the n-th call (1-based) with that idempotency key / for that charge. */
export interface Script {
  charge?: (req: ChargeRequest, n: number) => Outcome;
  refund?: (n: number) => Outcome;
  status?: (tenantId: string) => Outcome;
}

/** A real connect-node gRPC server implementing billing's Charge, Refund and GetTenantBillingStatus. */
export interface ScriptedBilling {
  readonly url: string;
  script: Script;
  readonly charges: Map<string, ScriptedCharge>;
  readonly calls: { charge: number; refund: number; status: number };
  /** Sets a tenant's subscription status and plan maximum (ACTIVE without a maximum by default). */
  setStatus(tenantId: string, status: SubscriptionStatus, maxOrderMinor?: bigint): void;
  /** Charges of the key (or all) whose money is kept: succeeded and not refunded. */
  kept(key?: string): ScriptedCharge[];
  close(): Promise<void>;
}

/**
 * Starts the scripted billing on 127.0.0.1 (port 0) with the kit's access and validation
 * interceptors; internal callers are identified by their mTLS certificate when tls is given,
 * otherwise by x-forwarded-client-cert (trusted here).
 * Charges are idempotent by key (a repeat waits for the first and answers it), as billing's are.
 */
export async function startScriptedBilling(
  script: Script = {},
  options: { tls?: { cert: string; key: string; ca: string } } = {},
): Promise<ScriptedBilling> {
  const charges = new Map<string, ScriptedCharge>();
  const byId = new Map<string, ScriptedCharge>();
  const refunds = new Map<string, string>();
  const statuses = new Map<string, { status: SubscriptionStatus; max?: bigint }>();
  const locks = new Map<string, Promise<unknown>>();
  const calls = { charge: 0, refund: 0, status: 0 };
  const perKey = new Map<string, number>();
  const count = (key: string) => {
    const n = (perKey.get(key) ?? 0) + 1;
    perKey.set(key, n);
    return n;
  };
  let seq = 0;
  const state: { script: Script } = { script };

  const settle = async (outcome: Outcome): Promise<Exclude<Outcome, { delayMs: number }>> => {
    if (typeof outcome === "object") {
      await sleep(outcome.delayMs);
      return settle(outcome.then ?? "ok");
    }
    return outcome;
  };
  const serialised = <T>(key: string, fn: () => Promise<T>): Promise<T> => {
    const prior = locks.get(key) ?? Promise.resolve();
    const next = prior.catch(() => {}).then(fn);
    locks.set(key, next);
    return next;
  };
  const toProto = (c: ScriptedCharge, failure = PaymentFailureCode.UNSPECIFIED): Charge =>
    create(ChargeSchema, {
      chargeId: c.chargeId,
      tenantId: c.tenantId,
      amount: create(MoneySchema, { amountMinor: c.amountMinor, currency: "USD" }),
      status:
        c.status === "succeeded"
          ? ChargeStatus.SUCCEEDED
          : c.status === "refunded"
            ? ChargeStatus.REFUNDED
            : ChargeStatus.FAILED,
      failureCode:
        c.status === "failed" ? failure || PaymentFailureCode.CARD_DECLINED : PaymentFailureCode.UNSPECIFIED,
      createdAt: timestampNow(),
    });
  const failures = new Map<string, PaymentFailureCode>();

  const running: RunningService = await startService({
    name: "billing-scripted",
    host: "127.0.0.1",
    port: 0,
    files: [file_trellis_billing_v1_billing],
    trustForwardedIdentity: options.tls === undefined,
    ...(options.tls ? { tls: options.tls } : {}),
    logger: pino({ level: "silent" }),
    metrics: new Registry(),
    interceptors: [
      createAccessInterceptor({
        verifier: {
          verify: async () => {
            throw new ConnectError("no user tokens here", Code.Unauthenticated);
          },
        },
      }),
      createValidationInterceptor(),
    ],
    routes(router) {
      router.service(BillingService, {
        async charge(req, ctx) {
          calls.charge++;
          const n = count(`charge/${req.idempotencyKey}`);
          const outcome = await settle(state.script.charge?.(req, n) ?? "ok");
          return serialised(`${req.tenantId}/${req.idempotencyKey}`, async () => {
            const existing = charges.get(req.idempotencyKey);
            if (existing) return { charge: toProto(existing, failures.get(existing.chargeId)) };
            if (outcome === "unavailable") throw new ConnectError("provider timed out", Code.Unavailable);
            const charge: ScriptedCharge = {
              key: req.idempotencyKey,
              chargeId: `ch_${++seq}`,
              tenantId: req.tenantId,
              amountMinor: req.amount?.amountMinor ?? 0n,
              status: outcome === "decline" || outcome === "insufficient" ? "failed" : "succeeded",
              caller: ctx.values.get(callerServiceKey),
            };
            if (outcome === "insufficient")
              failures.set(charge.chargeId, PaymentFailureCode.INSUFFICIENT_FUNDS);
            charges.set(charge.key, charge);
            byId.set(charge.chargeId, charge);
            if (outcome === "charge-then-unavailable")
              throw new ConnectError("answer lost", Code.Unavailable);
            return { charge: toProto(charge, failures.get(charge.chargeId)) };
          });
        },
        async refund(req) {
          calls.refund++;
          const n = count(`refund/${req.chargeId}`);
          const outcome = await settle(state.script.refund?.(n) ?? "ok");
          if (outcome === "unavailable") throw new ConnectError("provider timed out", Code.Unavailable);
          const charge = byId.get(req.chargeId);
          if (!charge || charge.tenantId !== req.tenantId)
            throw new ConnectError("no such charge", Code.NotFound);
          const prior = refunds.get(req.idempotencyKey);
          if (charge.status === "failed") throw new ConnectError("charge failed", Code.FailedPrecondition);
          if (charge.status === "refunded" && prior !== req.chargeId) {
            throw new ConnectError("nothing left to refund", Code.FailedPrecondition);
          }
          charge.status = "refunded";
          refunds.set(req.idempotencyKey, req.chargeId);
          return {
            refund: create(RefundSchema, { refundId: `re_${charge.chargeId}`, chargeId: charge.chargeId }),
            charge: toProto(charge),
          };
        },
        async getTenantBillingStatus(req) {
          calls.status++;
          const outcome = await settle(state.script.status?.(req.tenantId) ?? "ok");
          if (outcome === "unavailable") throw new ConnectError("billing down", Code.Unavailable);
          const s = statuses.get(req.tenantId) ?? { status: SubscriptionStatus.ACTIVE };
          return {
            tenantId: req.tenantId,
            subscriptionStatus: s.status,
            planId: "plan_test",
            ...(s.max === undefined
              ? {}
              : { maxOrderValue: create(MoneySchema, { amountMinor: s.max, currency: "USD" }) }),
          };
        },
      });
    },
  });

  return {
    url: `${options.tls ? "https" : "http"}://127.0.0.1:${running.port}`,
    get script() {
      return state.script;
    },
    set script(next: Script) {
      state.script = next;
    },
    charges,
    calls,
    setStatus(tenantId, status, max) {
      statuses.set(tenantId, { status, ...(max === undefined ? {} : { max }) });
    },
    kept(key) {
      return [...charges.values()].filter(
        (c) => c.status === "succeeded" && (key === undefined || c.key === key),
      );
    },
    close: () => running.close(),
  };
}
