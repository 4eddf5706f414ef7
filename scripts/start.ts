// `npm start`: the whole mesh on one machine, without Docker. Stores come from the environment
// (AUTH_DATABASE_URL, BILLING_DATABASE_URL, CORE_DATABASE_URL, CLICKHOUSE_URL, NATS_URL) or are
// embedded under .data/: PGlite behind pglite-socket per service database, chDB in the analytics
// process, and a nats-server child with JetStream. Services talk mTLS with dev certificates.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { makeCertificates } from "./certs.js";
import { type Stoppable, startEmbeddedNats, startEmbeddedPostgres } from "./start-stores.js";
import { type ChildSpec, superviseAll } from "./start-supervisor.js";

const root = resolve(import.meta.dirname, "..");
const dataDir = resolve(process.env.TRELLIS_DATA_DIR ?? join(root, ".data"));
mkdirSync(dataDir, { recursive: true });

/** The mesh: each service's port and the database it owns. */
const services = [
  { name: "auth", port: 8001, database: "AUTH_DATABASE_URL" },
  { name: "analytics", port: 8002, database: undefined },
  { name: "billing", port: 8003, database: "BILLING_DATABASE_URL" },
  { name: "core", port: 8004, database: "CORE_DATABASE_URL" },
] as const;
const gatewayPort = 8080;

const stores: Stoppable[] = [];
const log = (line: string) =>
  process.stdout.write(`${new Date().toISOString().slice(11, 19)} launcher  ${line}\n`);

async function main() {
  // The console is built once (web/dist is not committed); `npm run build -w web` rebuilds it.
  if (!existsSync(join(root, "web", "dist", "index.html"))) {
    log("building the browser console (web/dist)");
    const built = spawnSync("npm", ["run", "build", "-w", "web"], { cwd: root, stdio: "inherit" });
    if (built.status !== 0) throw new Error("building web/ failed");
  }
  const certDir = join(dataDir, "certs");
  makeCertificates(certDir, [...services.map((s) => s.name), "gateway"]);
  const tls = (name: string) => ({
    TLS_CERT_FILE: join(certDir, `${name}.pem`),
    TLS_KEY_FILE: join(certDir, `${name}-key.pem`),
    TLS_CA_FILE: join(certDir, "ca.pem"),
  });

  let natsUrl = process.env.NATS_URL;
  if (!natsUrl) {
    if (spawnSync("nats-server", ["--version"]).error) {
      log(
        "nats-server is not on the PATH. Install it (Debian: apt-get install nats-server) or set NATS_URL.",
      );
      process.exit(1);
    }
    const nats = await startEmbeddedNats(join(dataDir, "nats"), 14222);
    stores.push(nats);
    natsUrl = nats.url;
    log(`NATS with JetStream at ${natsUrl} (store ${join(dataDir, "nats")})`);
  }

  const databaseUrls: Record<string, string> = {};
  let embeddedPort = 15432;
  for (const s of services) {
    if (!s.database) continue;
    const given = process.env[s.database];
    if (given) {
      databaseUrls[s.name] = given;
      continue;
    }
    const pg = await startEmbeddedPostgres(join(dataDir, `pg-${s.name}`), embeddedPort++);
    stores.push(pg);
    databaseUrls[s.name] = pg.url;
    log(`PostgreSQL (PGlite) for ${s.name} at ${pg.url}`);
  }

  const common = {
    NATS_URL: natsUrl,
    LOG_LEVEL: process.env.LOG_LEVEL ?? "info",
    JWKS_URL: "http://127.0.0.1:9001/.well-known/jwks.json",
    // A demo stack: owners may also advance the billing test clock.
    AUTH_GRANT_TEST_PERMISSIONS: process.env.AUTH_GRANT_TEST_PERMISSIONS ?? "true",
    OTEL_EXPORTER_OTLP_ENDPOINT: process.env.OTEL_EXPORTER_OTLP_ENDPOINT,
  };
  const address = (port: number) => `https://127.0.0.1:${port}`;
  const children: ChildSpec[] = services.map((s) => ({
    name: s.name,
    entry: join(root, "services", s.name, "src", "main.ts"),
    env: {
      ...common,
      ...tls(s.name),
      PORT: String(s.port),
      ...(databaseUrls[s.name]
        ? {
            DATABASE_URL: databaseUrls[s.name],
            DATABASE_POOL_MAX: process.env[s.database ?? ""] ? "10" : "1",
          }
        : {}),
      ...(s.name === "analytics"
        ? { CLICKHOUSE_URL: process.env.CLICKHOUSE_URL ?? `chdb:${join(dataDir, "clickhouse")}` }
        : {}),
      ...(s.name === "core" ? { BILLING_URL: address(8003) } : {}),
    },
  }));
  children.push({
    name: "gateway",
    entry: join(root, "gateway", "src", "main.ts"),
    env: {
      ...common,
      ...tls("gateway"),
      GATEWAY_PORT: String(gatewayPort),
      AUTH_ADDRS: address(8001),
      ANALYTICS_ADDRS: address(8002),
      BILLING_ADDRS: address(8003),
      CORE_ADDRS: address(8004),
      WEB_DIR: join(root, "web", "dist"),
    },
  });

  const supervisor = superviseAll(children, { cwd: root, log });
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping every service`);
    const unclean = await supervisor.stop();
    for (const store of stores.reverse()) await store.stop().catch(() => {});
    log(unclean.length === 0 ? "stopped" : `stopped; not cleanly: ${unclean.join(", ")}`);
    process.exit(unclean.length === 0 ? 0 : 1);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));

  // "Up" means every service answers, not only the gateway: its readiness does not wait for them,
  // and a service still migrating would answer the first calls with unavailable.
  await Promise.all(
    [...services.map((s) => s.port), gatewayPort].map((port) =>
      supervisor.ready(`http://127.0.0.1:${port + 1000}/readyz`, 120_000),
    ),
  );
  const gw = `http://127.0.0.1:${gatewayPort}`;
  process.stdout.write(
    [
      "",
      "Trellis is up.",
      `  gateway      ${gw}   (Connect, gRPC-Web, REST; OpenAPI at ${gw}/openapi.json)`,
      `  console      ${gw}/`,
      "  services     auth :8001  analytics :8002  billing :8003  core :8004  (gRPC + mTLS; admin ports 9001-9004)",
      `  data         ${dataDir}`,
      "",
      "Try it:",
      `  curl -s ${gw}/trellis.auth.v1.AuthService/SignUp -H 'content-type: application/json' \\`,
      `    -d '{"email":"ada@example.com","password":"correct horse battery","tenantName":"Acme"}'`,
      "",
    ].join("\n"),
  );
}

main().catch(async (error) => {
  log(`failed to start: ${error instanceof Error ? error.message : error}`);
  for (const store of stores.reverse()) await store.stop().catch(() => {});
  process.exit(1);
});
