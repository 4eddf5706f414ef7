// The whole Trellis mesh in one test process: real PostgreSQL databases, a private NATS server,
// ClickHouse, the four services started from their definitions, and the gateway in front of them
// serving the built console. Mirrors how each service's own tests start it (services/*/test).
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createLogger } from "@trellis/kit/logger.js";
import type { ServiceDefinition, ServiceInstance } from "@trellis/kit/service.js";
import { startTestService } from "@trellis/kit/service.js";
import {
  createTestDatabase,
  startNatsServer,
  type TestDatabase,
  type TestNatsServer,
  uniqueName,
} from "@trellis/kit/testing.js";
import { loadGatewayConfig } from "../../gateway/src/config.js";
import { type Gateway, startGateway } from "../../gateway/src/gateway.js";
import { createAuthService } from "../../services/auth/src/server.js";
import { createBillingService } from "../../services/billing/src/server.js";
import { createCoreService } from "../../services/core/src/server.js";
import { type StaticFront, startStaticFront } from "./static-front.js";

const root = resolve(import.meta.dirname, "../..");
const adminUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const clickhouseUrl = process.env.TEST_CLICKHOUSE_URL ?? "http://127.0.0.1:8123";
const logLevel = process.env.TEST_LOG_LEVEL ?? "silent";

type Running = ServiceInstance & { readonly baseUrl: string };

/** A running mesh. */
export interface Stack {
  /** Where the browser goes: the gateway's origin (console at /, RPCs under /trellis.*). */
  readonly baseUrl: string;
  /** The gateway itself (equal to baseUrl unless the console had to be fronted, see servedBy). */
  readonly gatewayUrl: string;
  /** "gateway" when the gateway serves WEB_DIR; "test-front" when a same-origin front stood in. */
  readonly servedBy: "gateway" | "test-front";
  /** Whether the analytics service could be started (its definition exists). */
  readonly analytics: boolean;
  readonly services: Readonly<Record<string, Running>>;
  close(): Promise<void>;
}

/** Builds the console with Vite into outDir (a fresh build of the current source). */
export function buildConsole(outDir: string): void {
  const vite = join(root, "node_modules", "vite", "bin", "vite.js");
  const result = spawnSync(
    process.execPath,
    [vite, "build", "--outDir", outDir, "--emptyOutDir", "--logLevel", "warn"],
    {
      cwd: join(root, "web"),
      encoding: "utf8",
    },
  );
  if (result.status !== 0) throw new Error(`vite build failed:\n${result.stdout}\n${result.stderr}`);
}

function natsBinary(): string {
  return (
    process.env.NATS_SERVER_BIN ??
    (existsSync("/usr/sbin/nats-server") ? "/usr/sbin/nats-server" : "nats-server")
  );
}

async function clickhouse(statement: string): Promise<void> {
  const res = await fetch(clickhouseUrl, { method: "POST", body: statement });
  if (!res.ok) throw new Error(`ClickHouse: ${res.status} ${await res.text()}`);
}

// Analytics is loaded by path so the stack still runs (without it) while it is being written.
async function analyticsDefinition(env: Record<string, string>): Promise<ServiceDefinition | undefined> {
  const path = join(root, "services", "analytics", "src", "server.ts");
  if (!existsSync(path)) return undefined;
  const mod = (await import(path)) as Record<string, unknown>;
  const make = mod.createAnalyticsService;
  if (typeof make === "function") {
    const made = (make as (o?: unknown) => unknown)(env);
    const def = (made as { definition?: ServiceDefinition }).definition ?? (made as ServiceDefinition);
    if (typeof def?.create === "function") return def;
  }
  const constant = mod.analyticsService as ServiceDefinition | undefined;
  return typeof constant?.create === "function" ? constant : undefined;
}

/** What startStack runs. */
export interface StackOptions {
  /** The built console the gateway serves (WEB_DIR). */
  readonly webDir: string;
  /** An analytics to route to instead of starting the real one (a stub while it is unwritten). */
  readonly analyticsUrl?: string;
}

/** Starts the mesh. */
export async function startStack(options: StackOptions): Promise<Stack> {
  const cleanup: Array<() => Promise<unknown>> = [];
  const services: Record<string, Running> = {};
  const close = async () => {
    for (const step of cleanup.reverse()) await step().catch(() => {});
  };
  try {
    const nats: TestNatsServer = await startNatsServer(natsBinary());
    cleanup.push(() => nats.dispose());
    const database = async (prefix: string) => {
      const db: TestDatabase = await createTestDatabase(prefix, adminUrl);
      cleanup.push(() => db.drop());
      return db.url;
    };
    const start = async (
      name: string,
      definition: ServiceDefinition,
      databaseUrl: string | undefined,
      env: Record<string, string>,
    ) => {
      const instance = await startTestService(definition, { databaseUrl, natsUrl: nats.url, env });
      cleanup.push(() => instance.close());
      services[name] = instance;
      return instance;
    };

    // Auth first: the others verify its tokens with the keys it publishes.
    const authEnv = { TRUST_FORWARDED_IDENTITY: "true" };
    const authService = createAuthService(authEnv);
    const auth = await start("auth", authService.definition, await database("web_auth"), authEnv);
    // The services fetch keys over HTTP/1.1, which auth's h2c port does not speak: serve its JWKS.
    const jwks = await serveJwks(() => authService.app().keys.jwks());
    cleanup.push(() => jwks.close());
    const jwksUrl = jwks.url;

    const billing = await start("billing", createBillingService(), await database("web_billing"), {
      JWKS_URL: jwksUrl,
      TRUST_FORWARDED_IDENTITY: "true",
      BILLING_SANDBOX_TIMEOUT_MS: "5",
      BILLING_SCHEDULER_INTERVAL_MS: "0",
    });
    const core = await start("core", createCoreService(), await database("web_core"), {
      JWKS_URL: jwksUrl,
      BILLING_URL: billing.baseUrl,
      BILLING_FORWARDED_IDENTITY: "true",
      CORE_SAGA_POLL_INTERVAL: "100",
      CORE_SAGA_RETRY_BASE: "20",
      CORE_SAGA_RETRY_MAX: "200",
      CORE_BILLING_STATUS_TTL: "1000",
    });

    const chDatabase = uniqueName("web_analytics");
    const analyticsEnv = {
      JWKS_URL: jwksUrl,
      CLICKHOUSE_URL: clickhouseUrl,
      CLICKHOUSE_DATABASE: chDatabase,
    };
    const analyticsDef = options.analyticsUrl ? undefined : await analyticsDefinition(analyticsEnv);
    let analytics: Running | undefined;
    if (analyticsDef) {
      await clickhouse(`CREATE DATABASE IF NOT EXISTS ${chDatabase}`);
      cleanup.push(() => clickhouse(`DROP DATABASE IF EXISTS ${chDatabase}`));
      analytics = await start("analytics", analyticsDef, undefined, analyticsEnv);
    }

    const config = loadGatewayConfig({
      HOST: "127.0.0.1",
      GATEWAY_PORT: "0",
      GATEWAY_ADMIN_PORT: "0",
      LOG_LEVEL: logLevel,
      AUTH_ADDRS: auth.baseUrl,
      BILLING_ADDRS: billing.baseUrl,
      CORE_ADDRS: core.baseUrl,
      // Without analytics its calls fail as unavailable, which the console shows as such.
      ANALYTICS_ADDRS: options.analyticsUrl ?? analytics?.baseUrl ?? "http://127.0.0.1:9",
      NATS_URL: nats.url,
      WEB_DIR: options.webDir,
      SHUTDOWN_GRACE_MS: "500",
    });
    const gateway: Gateway = await startGateway({
      config,
      logger: createLogger({ service: "gateway", level: logLevel as "silent" }),
    });
    cleanup.push(() => gateway.close());
    const gatewayUrl = `http://127.0.0.1:${gateway.port}`;

    let baseUrl = gatewayUrl;
    let servedBy: Stack["servedBy"] = "gateway";
    const index = await fetch(`${gatewayUrl}/`);
    if (!(index.ok && (index.headers.get("content-type") ?? "").includes("text/html"))) {
      // The gateway does not serve WEB_DIR (yet): a same-origin front serves the files and proxies the rest.
      const front: StaticFront = await startStaticFront(options.webDir, gatewayUrl);
      cleanup.push(() => front.close());
      baseUrl = front.url;
      servedBy = "test-front";
    }
    const hasAnalytics = analytics !== undefined || options.analyticsUrl !== undefined;
    return { baseUrl, gatewayUrl, servedBy, analytics: hasAnalytics, services, close };
  } catch (error) {
    await close();
    throw error;
  }
}

async function serveJwks(keys: () => Promise<unknown[]>): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer((_req, res) => {
    keys().then(
      (list) => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ keys: list }));
      },
      () => {
        res.writeHead(503);
        res.end();
      },
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A temporary directory removed by the returned function. */
export async function tempDir(prefix: string): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}
