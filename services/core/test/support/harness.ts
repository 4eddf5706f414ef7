import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CoreService, type OrderStatus } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { createDb, type Db } from "@trellis/kit/db.js";
import { type ServiceInstance, startTestService } from "@trellis/kit/service.js";
import { createTestIssuer, type TestIssuer } from "@trellis/kit/test-tokens.js";
import { createTestDatabase, eventually, type TestDatabase } from "@trellis/kit/testing.js";
import { type CoreInternals, type CoreOverrides, createCoreService } from "../../src/server.js";

/** Every permission core's RPCs check. */
export const allPermissions = [
  "core.products.write",
  "core.products.read",
  "core.inventory.write",
  "core.orders.write",
  "core.orders.read",
  "core.orders.fulfill",
];

/** Env that makes a test instance quick to retry and resume. */
export const fastSagaEnv = {
  CORE_SAGA_POLL_INTERVAL: "100",
  CORE_SAGA_RETRY_BASE: "20",
  CORE_SAGA_RETRY_MAX: "200",
  CORE_SAGA_STEP_TIMEOUT: "2000",
  CORE_SWEEP_INTERVAL: "100",
  CORE_BILLING_STATUS_TTL: "600000",
};

/** The env core needs to trust a test issuer and reach a billing without TLS. */
export function coreEnv(issuer: TestIssuer, billingUrl: string, extra: Record<string, string> = {}) {
  return {
    JWT_ISSUER: issuer.issuer,
    JWT_AUDIENCE: issuer.audience,
    BILLING_URL: billingUrl,
    BILLING_FORWARDED_IDENTITY: "true",
    ...fastSagaEnv,
    ...extra,
  };
}

/** A test database, token issuer and the means to start core instances on them. */
export interface Harness {
  readonly db: TestDatabase;
  readonly issuer: TestIssuer;
  readonly jwksUrl: string;
  /** A pool on the test database, for assertions. */
  readonly sql: Db;
  start(options: {
    natsUrl: string;
    billingUrl: string;
    env?: Record<string, string>;
    overrides?: CoreOverrides;
  }): Promise<{ instance: ServiceInstance & { baseUrl: string }; internals: CoreInternals }>;
  /** A core client acting as a user of a tenant (all permissions unless given). */
  client(
    baseUrl: string,
    tenantId: string,
    perms?: readonly string[],
    userId?: string,
  ): Promise<Client<typeof CoreService>>;
  close(): Promise<void>;
}

/** Creates the harness: a fresh database and a JWKS-serving issuer. */
export async function createHarness(): Promise<Harness> {
  const db = await createTestDatabase("core_test", process.env.TEST_DATABASE_URL);
  const issuer = await createTestIssuer();
  const jwksUrl = await issuer.serve();
  const sql = createDb(db.url, { max: 4 });
  const instances: ServiceInstance[] = [];
  return {
    db,
    issuer,
    jwksUrl,
    sql,
    async start({ natsUrl, billingUrl, env = {}, overrides = {} }) {
      const internals: CoreInternals = {};
      const instance = await startTestService(createCoreService(overrides, internals), {
        databaseUrl: db.url,
        natsUrl,
        jwksUrl,
        env: coreEnv(issuer, billingUrl, env),
      });
      instances.push(instance);
      return { instance, internals };
    },
    async client(baseUrl, tenantId, perms = allPermissions, userId = "user_1") {
      const token = await issuer.sign({ sub: userId, tid: tenantId, perms });
      const auth: Interceptor = (next) => (req) => {
        req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      };
      return createClient(CoreService, createGrpcTransport({ baseUrl, interceptors: [auth] }));
    },
    async close() {
      for (const instance of instances) await instance.close().catch(() => {});
      await sql.end({ timeout: 1 });
      await issuer.close();
      await db.drop();
    },
  };
}

/** Polls GetOrder until the order reaches one of the statuses. */
export async function orderReaches(
  client: Client<typeof CoreService>,
  orderId: string,
  statuses: readonly OrderStatus[],
  timeoutMs = 15_000,
) {
  return eventually(
    async () => {
      const { order } = await client.getOrder({ orderId });
      return order && statuses.includes(order.status) ? order : undefined;
    },
    { timeoutMs, what: `order ${orderId} to reach ${statuses.join("|")}` },
  );
}

/** Polls the database until the order's saga is completed or compensated; returns its row. */
export async function sagaSettles(sql: Db, orderId: string, timeoutMs = 15_000) {
  return eventually(
    async () => {
      const [row] = await sql<{ status: string; charge_state: string }[]>`
        select status, charge_state from sagas where order_id = ${orderId}`;
      return row && (row.status === "completed" || row.status === "compensated") ? row : undefined;
    },
    { timeoutMs, what: `saga of ${orderId} to settle` },
  );
}

/** Creates an active product with a price (USD) and on-hand stock; returns its id. */
export async function productWithStock(
  client: Client<typeof CoreService>,
  sku: string,
  priceMinor: bigint,
  onHand: number,
  lowStockThreshold = 0,
): Promise<string> {
  const { product } = await client.createProduct({
    sku,
    name: `Product ${sku}`,
    price: { amountMinor: priceMinor, currency: "USD" },
    active: true,
    lowStockThreshold,
  });
  const productId = product?.productId ?? "";
  if (onHand > 0) {
    await client.adjustStock({
      productId,
      delta: onHand,
      reason: "initial stock",
      idempotencyKey: `init-${sku}`,
    });
  }
  return productId;
}
