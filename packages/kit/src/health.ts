import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type Health,
  type HealthCheckRequest,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  type HealthListResponse,
  HealthListResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "@trellis/gen/grpc/health/v1/health_pb.js";
import type { Logger } from "pino";

export { HealthCheckResponse_ServingStatus as ServingStatus } from "@trellis/gen/grpc/health/v1/health_pb.js";

/** A dependency check: resolves when the dependency is usable, rejects when it is not. */
export type HealthCheck = () => Promise<void>;

/** Options for createHealthState. */
export interface HealthStateOptions {
  /** Dependency checks by name (e.g. "postgres", "nats"); none means always SERVING. */
  readonly checks?: Readonly<Record<string, HealthCheck>>;
  /** Milliseconds between check rounds (default 2000). */
  readonly intervalMs?: number;
  /** Milliseconds a check may take before it counts as failed (default 1000). */
  readonly timeoutMs?: number;
  readonly logger: Logger;
}

/** The service's health: one status shared by "" (overall) and every registered service name. */
export interface HealthState {
  /** Makes a service name known, so Check answers for it instead of NOT_FOUND. */
  register(service: string): void;
  /** The status of a known service name ("" is the whole server), undefined when unknown. */
  status(service?: string): ServingStatus | undefined;
  /** Every known service name, "" included. */
  services(): readonly string[];
  /** The names of the dependencies whose last check failed. */
  failing(): readonly string[];
  /** Runs one round of checks now and applies the result. */
  checkNow(): Promise<void>;
  /** Runs a first round, then keeps checking every interval until shutdown(). */
  start(): Promise<void>;
  /** Moves everything to NOT_SERVING for good and stops checking. */
  shutdown(): void;
  /** True once shutdown() ran. */
  readonly shuttingDown: boolean;
  /** Calls listener on every status change; returns the unsubscribe function. */
  subscribe(listener: () => void): () => void;
}

/** Creates health state that checks its dependencies on an interval. */
export function createHealthState(options: HealthStateOptions): HealthState {
  const checks = Object.entries(options.checks ?? {});
  const intervalMs = options.intervalMs ?? 2000;
  const timeoutMs = options.timeoutMs ?? 1000;
  const services = new Set<string>([""]);
  const listeners = new Set<() => void>();
  let serving = checks.length === 0 ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
  let failing: string[] = [];
  let down = false;
  let timer: NodeJS.Timeout | undefined;
  let round: Promise<void> | undefined;

  const set = (next: ServingStatus) => {
    if (next === serving) return;
    serving = next;
    for (const listener of [...listeners]) listener();
  };

  const runRound = async () => {
    const results = await Promise.all(
      checks.map(async ([name, check]) => {
        try {
          await withTimeout(check(), timeoutMs);
          return undefined;
        } catch (error) {
          return { name, error };
        }
      }),
    );
    if (down) return;
    const failed = results.filter((r) => r !== undefined);
    const names = failed.map((f) => f.name);
    if (names.join() !== failing.join()) {
      if (names.length > 0) {
        options.logger.warn(
          { dependencies: names, err: failed[0]?.error },
          "dependency check failed: NOT_SERVING",
        );
      } else {
        options.logger.info("all dependency checks pass: SERVING");
      }
    }
    failing = names;
    set(names.length === 0 ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
  };

  const checkNow = () => {
    // Rounds never overlap: a caller during a round waits for that round.
    round ??= runRound().finally(() => {
      round = undefined;
    });
    return round;
  };

  const schedule = () => {
    if (down) return;
    timer = setTimeout(() => {
      void checkNow().finally(schedule);
    }, intervalMs);
    timer.unref();
  };

  return {
    register(service) {
      services.add(service);
    },
    status(service = "") {
      return services.has(service) ? serving : undefined;
    },
    services: () => [...services],
    failing: () => failing,
    checkNow,
    async start() {
      if (checks.length === 0) return;
      await checkNow();
      schedule();
    },
    shutdown() {
      if (down) return;
      down = true;
      clearTimeout(timer);
      set(ServingStatus.NOT_SERVING);
      for (const listener of [...listeners]) listener();
    },
    get shuttingDown() {
      return down;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

/** The grpc.health.v1.Health implementation (Check, Watch and List) over the given state. */
export function createHealthService(state: HealthState): ServiceImpl<typeof Health> {
  return {
    list(): HealthListResponse {
      const statuses: HealthListResponse["statuses"] = {};
      for (const service of state.services()) {
        statuses[service] = create(HealthCheckResponseSchema, { status: state.status(service) });
      }
      return create(HealthListResponseSchema, { statuses });
    },
    check(request: HealthCheckRequest): HealthCheckResponse {
      const status = state.status(request.service);
      if (status === undefined) {
        throw new ConnectError(`unknown service ${request.service}`, Code.NotFound);
      }
      return create(HealthCheckResponseSchema, { status });
    },
    watch(request: HealthCheckRequest, ctx: HandlerContext): AsyncIterable<HealthCheckResponse> {
      return watchStatus(state, request.service, ctx.signal);
    },
  };
}

async function* watchStatus(
  state: HealthState,
  service: string,
  signal: AbortSignal,
): AsyncGenerator<HealthCheckResponse> {
  let wake: (() => void) | undefined;
  let changed = true;
  const onChange = () => {
    changed = true;
    wake?.();
  };
  const unsubscribe = state.subscribe(onChange);
  signal.addEventListener("abort", onChange);
  try {
    let last: ServingStatus | undefined;
    while (!signal.aborted) {
      if (!changed) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
        continue;
      }
      changed = false;
      // Per the health spec, an unknown name gets SERVICE_UNKNOWN and the stream stays open.
      const status = state.status(service) ?? ServingStatus.SERVICE_UNKNOWN;
      if (status !== last) {
        last = status;
        yield create(HealthCheckResponseSchema, { status });
      }
      // After shutdown the last word is NOT_SERVING; ending the stream lets the server drain.
      if (state.shuttingDown) return;
    }
  } finally {
    unsubscribe();
    signal.removeEventListener("abort", onChange);
  }
}

function withTimeout(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`health check timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
