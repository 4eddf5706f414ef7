// compose.yaml and its deploy/ files, derived from the same workloads as istio/: one entry per
// service and the gateway (built from its Dockerfile), the stores, an OpenTelemetry collector and
// Prometheus. Services speak native mTLS here (certificates from `npm run certs`), since no mesh
// vouches for callers.
import { stringify } from "yaml";
import { meshServices } from "./call-graph.ts";
import { workspaceDir } from "./service-templates.ts";
import type { Workload } from "./workloads.ts";

/** Images of the infrastructure (current majors; bump deliberately). */
export const infraImages = {
  postgres: "postgres:16-bookworm",
  clickhouse: "clickhouse/clickhouse-server:25.8",
  nats: "nats:2-alpine",
  otel: "otel/opentelemetry-collector-contrib:0.130.0",
  prometheus: "prom/prometheus:v3.5.0",
  node: "node:20-bookworm-slim",
} as const;

/** The PostgreSQL database and role of a service. */
export function postgresDatabase(service: string): { database: string; role: string; password: string } {
  return {
    database: `trellis_${service.replace(/-/g, "_")}`,
    role: service.replace(/-/g, "_"),
    password: service,
  };
}

const httpCheck = (port: number, path: string) => [
  "CMD",
  "node",
  "-e",
  `fetch('http://127.0.0.1:${port}${path}').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))`,
];

function environment(w: Workload): Record<string, string> {
  const env: Record<string, string> = {
    [w.portVariable]: String(w.port),
    [w.adminPortVariable]: String(w.port + 1000),
    LOG_LEVEL: "info",
    NATS_URL: "nats://nats:4222",
    OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel-collector:4318",
    TLS_CERT_FILE: `/certs/${w.name}.pem`,
    TLS_KEY_FILE: `/certs/${w.name}-key.pem`,
    TLS_CA_FILE: "/certs/ca.pem",
  };
  // Services verify tokens against the gateway's JWKS (fetched on the first token, so no start order).
  if (w.kitService) env.JWKS_URL = "http://gateway:8080/.well-known/jwks.json";
  if (w.stores.includes("postgres")) {
    const db = postgresDatabase(w.name);
    env.DATABASE_URL = `postgres://${db.role}:${db.password}@postgres:5432/${db.database}`;
  }
  if (w.stores.includes("clickhouse")) env.CLICKHOUSE_URL = "http://trellis:trellis@clickhouse:8123/trellis";
  for (const u of w.upstreams) {
    const port = meshServices.find((s) => s.name === u)?.port;
    env[w.upstreamVariable(u)] = `https://${u}:${port}`;
  }
  return env;
}

/** The compose entry of a workload. */
export function composeService(w: Workload, imageOf: (name: string) => string): Record<string, unknown> {
  const admin = w.port + 1000;
  const dependsOn: Record<string, { condition: string }> = {
    certs: { condition: "service_completed_successfully" },
    nats: { condition: "service_healthy" },
    "otel-collector": { condition: "service_started" },
  };
  if (w.stores.includes("postgres")) dependsOn.postgres = { condition: "service_healthy" };
  if (w.stores.includes("clickhouse")) dependsOn.clickhouse = { condition: "service_healthy" };
  for (const u of w.upstreams) dependsOn[u] = { condition: "service_healthy" };
  return {
    image: imageOf(w.name),
    build: { context: ".", dockerfile: `${workspaceDir(w.name)}/Dockerfile` },
    environment: environment(w),
    // The gateway is the public entry; services are published on loopback for grpcurl and curl.
    ports: [
      w.kitService ? `127.0.0.1:${w.port}:${w.port}` : `${w.port}:${w.port}`,
      `127.0.0.1:${admin}:${admin}`,
    ],
    volumes: [`certs-${w.name}:/certs:ro`],
    read_only: true,
    tmpfs: ["/tmp"],
    cap_drop: ["ALL"],
    security_opt: ["no-new-privileges:true"],
    healthcheck: {
      test: httpCheck(admin, "/readyz"),
      interval: "5s",
      timeout: "3s",
      retries: 30,
      start_period: "30s",
    },
    depends_on: dependsOn,
    restart: "unless-stopped",
  };
}

function infrastructure(names: readonly string[]): Record<string, unknown> {
  // $$ is compose's escape for a literal $ (the shell's variable, not compose interpolation).
  const copy = [
    `for s in ${names.join(" ")}; do`,
    'test -f "/host-certs/$$s.pem" || { echo "no certificate for $$s in .certs: run npm run certs" >&2; exit 1; };',
    'cp /host-certs/ca.pem "/host-certs/$$s.pem" "/host-certs/$$s-key.pem" "/out/$$s/" &&',
    'chown -R 1000:1000 "/out/$$s" && chmod 0400 "/out/$$s/$$s-key.pem" || exit 1;',
    "done",
  ].join(" ");
  return {
    // Copies each workload's certificate and key (from `npm run certs`) into a volume of its own,
    // owned by the images' user (node, 1000): no container can read another's key.
    certs: {
      image: infraImages.node,
      user: "root",
      network_mode: "none",
      volumes: ["./.certs:/host-certs:ro", ...names.map((n) => `certs-${n}:/out/${n}`)],
      command: ["sh", "-c", copy],
    },
    postgres: {
      image: infraImages.postgres,
      environment: { POSTGRES_PASSWORD: "postgres" },
      volumes: [
        "postgres-data:/var/lib/postgresql/data",
        "./deploy/postgres-init.sql:/docker-entrypoint-initdb.d/10-trellis.sql:ro",
      ],
      // Over TCP: during initialisation the server listens on its socket only.
      healthcheck: {
        test: ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "postgres"],
        interval: "5s",
        timeout: "3s",
        retries: 30,
      },
      restart: "unless-stopped",
    },
    clickhouse: {
      image: infraImages.clickhouse,
      environment: {
        CLICKHOUSE_DB: "trellis",
        CLICKHOUSE_USER: "trellis",
        CLICKHOUSE_PASSWORD: "trellis",
        CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT: "1",
      },
      ulimits: { nofile: { soft: 262144, hard: 262144 } },
      volumes: ["clickhouse-data:/var/lib/clickhouse"],
      healthcheck: {
        test: [
          "CMD",
          "clickhouse-client",
          "--user",
          "trellis",
          "--password",
          "trellis",
          "--query",
          "SELECT 1",
        ],
        interval: "5s",
        timeout: "3s",
        retries: 30,
      },
      restart: "unless-stopped",
    },
    nats: {
      image: infraImages.nats,
      command: ["-js", "-sd", "/data", "-m", "8222"],
      volumes: ["nats-data:/data"],
      healthcheck: {
        test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8222/healthz?js-enabled-only=true"],
        interval: "5s",
        timeout: "3s",
        retries: 30,
      },
      restart: "unless-stopped",
    },
    // Distroless: no shell for a healthcheck; its health_check extension answers on 13133.
    "otel-collector": {
      image: infraImages.otel,
      command: ["--config=/etc/otelcol-contrib/config.yaml"],
      volumes: ["./deploy/otel-collector.yaml:/etc/otelcol-contrib/config.yaml:ro"],
      restart: "unless-stopped",
    },
    prometheus: {
      image: infraImages.prometheus,
      volumes: ["./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro"],
      ports: ["127.0.0.1:9090:9090"],
      healthcheck: {
        test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9090/-/healthy"],
        interval: "10s",
        timeout: "3s",
        retries: 10,
      },
      restart: "unless-stopped",
    },
  };
}

/** compose.yaml as text. */
export function composeYaml(workloads: readonly Workload[], imageOf: (name: string) => string): string {
  const names = workloads.map((w) => w.name);
  const services: Record<string, unknown> = infrastructure(names);
  for (const w of workloads) services[w.name] = composeService(w, imageOf);
  const doc = {
    name: "trellis",
    services,
    volumes: Object.fromEntries(
      [...names.map((n) => `certs-${n}`), "postgres-data", "clickhouse-data", "nats-data"].map((v) => [
        v,
        {},
      ]),
    ),
  };
  return [
    "# The whole stack in containers: `npm run certs && docker compose up --build`; the gateway on :8080.",
    "# Generated by scripts/manifests.ts (with istio/): do not edit, run `npm run manifests`.",
    stringify(doc, { lineWidth: 0 }),
  ].join("\n");
}

/** deploy/prometheus.yml: scrapes every workload's admin port. */
export function prometheusYaml(workloads: readonly Workload[]): string {
  const doc = {
    global: { scrape_interval: "15s", evaluation_interval: "15s" },
    scrape_configs: [
      {
        job_name: "trellis",
        metrics_path: "/metrics",
        static_configs: workloads.map((w) => ({
          targets: [`${w.name}:${w.port + 1000}`],
          labels: { service: w.name },
        })),
      },
    ],
  };
  return `# Prometheus for compose; generated by scripts/manifests.ts.\n${stringify(doc, { lineWidth: 0 })}`;
}

/** deploy/postgres-init.sql: a role and a database per service that uses PostgreSQL. */
export function postgresInitSql(workloads: readonly Workload[]): string {
  const lines = [
    "-- One role and one database per service; compose runs this once, on an empty data volume.",
    "-- Development passwords (the service's name). Generated by scripts/manifests.ts.",
  ];
  for (const w of workloads.filter((x) => x.stores.includes("postgres"))) {
    const db = postgresDatabase(w.name);
    lines.push(
      "",
      `CREATE ROLE ${db.role} LOGIN PASSWORD '${db.password}';`,
      `CREATE DATABASE ${db.database} OWNER ${db.role};`,
      `REVOKE ALL ON DATABASE ${db.database} FROM PUBLIC;`,
    );
  }
  return `${lines.join("\n")}\n`;
}
