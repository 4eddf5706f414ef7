import {
  connect,
  type JetStreamManager,
  type NatsConnection,
  type NatsError,
  nanos,
  type StreamConfig,
  type StreamInfo,
} from "nats";

/** Options for {@link connectNats}. */
export interface ConnectNatsOptions {
  /** Connection name shown by the server (`nats server report connections`); use the service name. */
  readonly name: string;
  /** Wait between reconnect attempts (default 1000 ms). */
  readonly reconnectTimeWaitMs?: number;
}

/**
 * Connects to NATS and never gives up: it keeps retrying the first connect and every reconnect,
 * buffering publishes meanwhile, so a NATS outage delays events rather than losing them.
 */
export function connectNats(
  servers: string | string[],
  options: ConnectNatsOptions,
): Promise<NatsConnection> {
  return connect({
    servers,
    name: options.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: options.reconnectTimeWaitMs ?? 1000,
    waitOnFirstConnect: true,
    // A dead peer is noticed within about a minute even when no TCP reset arrives.
    pingInterval: 20_000,
    maxPingOut: 3,
    // Otherwise every request (each JetStream publish awaits its ack by one) captures a stack trace
    // up front in case it fails: a large share of the relay's CPU at a few thousand events a second.
    noAsyncTraces: true,
  });
}

/** A health check resolving when the connection is open and answers a round trip within timeoutMs. */
export function natsCheck(nc: NatsConnection, timeoutMs = 2000): () => Promise<void> {
  return async () => {
    if (nc.isClosed()) throw new Error("nats connection is closed");
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`nats did not answer within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([nc.flush(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  };
}

/** The stream a producing service publishes to. */
export interface StreamSpec {
  readonly name: string;
  readonly subjects: readonly string[];
  /** Window in which a repeated Nats-Msg-Id is dropped (default 2 minutes). */
  readonly duplicateWindowMs?: number;
  /** Maximum age of stored messages (default: unlimited). */
  readonly maxAgeMs?: number;
}

const STREAM_NOT_FOUND = 10059;
const STREAM_NAME_IN_USE = 10058;

/** Creates the stream or updates its subjects and windows so it matches the spec. */
export async function ensureStream(jsm: JetStreamManager, spec: StreamSpec): Promise<StreamInfo> {
  const wanted: Partial<StreamConfig> = {
    subjects: [...spec.subjects],
    duplicate_window: nanos(spec.duplicateWindowMs ?? 120_000),
    ...(spec.maxAgeMs === undefined ? {} : { max_age: nanos(spec.maxAgeMs) }),
  };
  for (let attempt = 0; ; attempt++) {
    try {
      const info = await jsm.streams.info(spec.name);
      return await jsm.streams.update(spec.name, { ...info.config, ...wanted });
    } catch (error) {
      if (apiErrorCode(error) !== STREAM_NOT_FOUND) throw error;
    }
    try {
      return await jsm.streams.add({ name: spec.name, ...wanted });
    } catch (error) {
      // Another instance created it between our info and add: update it on the next pass.
      if (apiErrorCode(error) !== STREAM_NAME_IN_USE || attempt > 0) throw error;
    }
  }
}

/** The JetStream API error code of a failed JetStream call, if it has one. */
export function apiErrorCode(error: unknown): number | undefined {
  return (error as Partial<NatsError> | undefined)?.api_error?.err_code;
}
