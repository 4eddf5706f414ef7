// A real analytics server for the RPC tests: port 0, a private nats-server, a unique ClickHouse
// database on the test server, and a token issuer whose JWKS the service trusts.
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  AnalyticsService,
  type ClientEvent,
  ClientEventSchema,
} from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { connectNats } from "@trellis/kit/nats.js";
import { type ServiceInstance, startTestService } from "@trellis/kit/service.js";
import { createTestIssuer, type TestIssuer, type TestTokenClaims } from "@trellis/kit/test-tokens.js";
import { startNatsServer, type TestNatsServer, uniqueName } from "@trellis/kit/testing.js";
import type { NatsConnection } from "nats";
import { createServerClickHouse } from "../src/clickhouse.ts";
import { createAnalyticsService } from "../src/server.ts";
import { createAnalyticsStore } from "../src/store.ts";

/** The test ClickHouse server (18.16 on this machine). */
export const CLICKHOUSE_URL = process.env.TEST_CLICKHOUSE_URL ?? "http://127.0.0.1:8123";

/** Every analytics permission. */
export const ALL_PERMISSIONS = [
  "analytics.events.write",
  "analytics.metrics.read",
  "analytics.reports.read",
] as const;

/** An analytics client. */
export type AnalyticsClient = Client<typeof AnalyticsService>;

/** A running analytics service and ways to call it. */
export interface Harness {
  readonly instance: ServiceInstance & { readonly baseUrl: string };
  readonly nats: TestNatsServer;
  /** A connection to the private nats-server (to publish domain events). */
  readonly nc: NatsConnection;
  readonly issuer: TestIssuer;
  readonly database: string;
  /** A client acting as a user of tenantId with perms (all analytics permissions by default). */
  user(tenantId: string, perms?: readonly string[], claims?: TestTokenClaims): Promise<AnalyticsClient>;
  /** A client sending the given authorization header value, or none. */
  raw(authorization?: string): AnalyticsClient;
  close(): Promise<void>;
}

const header =
  (name: string, value: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set(name, value);
    return next(req);
  };

/** Starts analytics against the test ClickHouse server (or env's CLICKHOUSE_URL) and a private NATS. */
export async function startAnalytics(
  env: Record<string, string> = {},
  beforeStart?: (nc: NatsConnection) => Promise<void>,
): Promise<Harness> {
  const nats = await startNatsServer("/usr/sbin/nats-server");
  const nc = await connectNats(nats.url, { name: "analytics-test" });
  await beforeStart?.(nc);
  const issuer = await createTestIssuer();
  const database = uniqueName("analytics_svc");
  const instance = await startTestService(createAnalyticsService(), {
    natsUrl: nats.url,
    jwksUrl: await issuer.serve(),
    env: {
      JWT_ISSUER: issuer.issuer,
      JWT_AUDIENCE: issuer.audience,
      CLICKHOUSE_URL,
      CLICKHOUSE_DATABASE: database,
      ANALYTICS_INGEST_STREAM: uniqueName("INGEST").toUpperCase(),
      ANALYTICS_DOMAIN_STREAMS: "none",
      ANALYTICS_FLUSH_INTERVAL: "100ms",
      ...env,
    },
  });
  const client = (interceptors: Interceptor[]) =>
    createClient(AnalyticsService, createGrpcTransport({ baseUrl: instance.baseUrl, interceptors }));
  return {
    instance,
    nats,
    nc,
    issuer,
    database,
    async user(tenantId, perms = ALL_PERMISSIONS, claims = {}) {
      const token = await issuer.sign({ tid: tenantId, perms, expiresIn: 900, ...claims });
      return client([header("authorization", `Bearer ${token}`)]);
    },
    raw(authorization) {
      return client(authorization ? [header("authorization", authorization)] : []);
    },
    async close() {
      await instance.close();
      await nc.close();
      await nats.dispose();
      await issuer.close();
      const url = env.CLICKHOUSE_URL ?? CLICKHOUSE_URL;
      if (/^https?:/.test(url)) {
        const ch = createServerClickHouse(url);
        await createAnalyticsStore({ clickhouse: ch, database }).dropDatabase();
        await ch.close();
      }
    },
  };
}

/** A client event: a fresh id, the name, an actor, and optionally a time and properties. */
export function event(
  name: string,
  actor: { user?: string; anon?: string },
  options: {
    timeMs?: number;
    props?: Record<string, string>;
    nums?: Record<string, number>;
    id?: string;
  } = {},
): ClientEvent {
  return create(ClientEventSchema, {
    eventId: options.id ?? randomUUID(),
    name,
    actor:
      actor.user !== undefined
        ? { case: "userId", value: actor.user }
        : { case: "anonymousId", value: actor.anon ?? "anon" },
    time: options.timeMs === undefined ? undefined : timestampFromMs(options.timeMs),
    properties: options.props ?? {},
    numericProperties: options.nums ?? {},
  });
}
