import {
  ConfigError,
  type ConfigOf,
  type ConfigSource,
  env,
  kitConfigSchema,
  loadConfig,
} from "@trellis/kit/config.js";
import { parseRateLimits } from "./rate-limit.js";

/** The services behind the gateway, by the name their *_ADDRS variable and mesh identity use. */
export const upstreamNames = ["auth", "analytics", "billing", "core"] as const;

/** One of the upstream service names. */
export type UpstreamName = (typeof upstreamNames)[number];

const defaultPorts: Readonly<Record<UpstreamName, number>> = {
  auth: 8001,
  analytics: 8002,
  billing: 8003,
  core: 8004,
};

function addressList(raw: string): string[] {
  const urls = raw
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  if (urls.length === 0) throw new Error("no address");
  for (const url of urls) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new Error(`not a URL: ${url}`);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new Error(`not http(s): ${url}`);
    if (parsed.pathname !== "/" && parsed.pathname !== "") throw new Error(`must not have a path: ${url}`);
  }
  return urls.map((u) => u.replace(/\/+$/, ""));
}

function originList(raw: string): string[] {
  return raw
    .split(",")
    .map((s) => s.trim().replace(/\/+$/, ""))
    .filter((s) => s !== "");
}

/** The gateway's environment variables (see the README's gateway section). */
export function gatewayConfigSchema() {
  const kit = kitConfigSchema(8080);
  const addrs = (name: UpstreamName) =>
    env.custom(addressList, { default: [`http://127.0.0.1:${defaultPorts[name]}`] });
  return {
    GATEWAY_PORT: env.port({ default: 8080 }),
    GATEWAY_ADMIN_PORT: env.port({
      default: (earlier) => {
        const port = typeof earlier.GATEWAY_PORT === "number" ? earlier.GATEWAY_PORT : 8080;
        return port === 0 ? 0 : port + 1000;
      },
    }),
    HOST: kit.HOST,
    LOG_LEVEL: kit.LOG_LEVEL,
    OTEL_EXPORTER_OTLP_ENDPOINT: kit.OTEL_EXPORTER_OTLP_ENDPOINT,
    TLS_CERT_FILE: kit.TLS_CERT_FILE,
    TLS_KEY_FILE: kit.TLS_KEY_FILE,
    TLS_CA_FILE: kit.TLS_CA_FILE,
    /** Trust domain of the services' SPIFFE ids, checked on their certificates when TLS is on. */
    SPIFFE_TRUST_DOMAIN: env.string({ default: "trellis.local" }),
    SPIFFE_NAMESPACE: env.string({ default: "trellis" }),
    SHUTDOWN_GRACE_MS: kit.SHUTDOWN_GRACE_MS,
    AUTH_ADDRS: addrs("auth"),
    ANALYTICS_ADDRS: addrs("analytics"),
    BILLING_ADDRS: addrs("billing"),
    CORE_ADDRS: addrs("core"),
    /** Without it the gateway reads auth's keys through AuthService.GetJwks. */
    JWKS_URL: kit.JWKS_URL,
    JWT_ISSUER: kit.JWT_ISSUER,
    JWT_AUDIENCE: kit.JWT_AUDIENCE,
    NATS_URL: kit.NATS_URL,
    /** Follow auth's session.revoked events (turn off only where no NATS runs). */
    REVOCATIONS: env.bool({ default: true }),
    REVOCATIONS_STREAM: env.string({ default: "AUTH" }),
    CORS_ORIGINS: env.custom(originList, { default: [] }),
    /** The built browser console (web/dist), served at / when set. */
    WEB_DIR: env.string({ optional: true }),
    RATE_LIMITS: env.custom(parseRateLimits, { default: parseRateLimits("{}") }),
    /** Take the client address from X-Forwarded-For (only behind a proxy that sets it). */
    TRUST_PROXY: env.bool({ default: false }),
    DEFAULT_TIMEOUT: env.duration({ default: 15_000, min: 1 }),
    MAX_TIMEOUT: env.duration({ default: 60_000, min: 1 }),
    MAX_BODY_BYTES: env.int({ default: 4 * 1024 * 1024, min: 1024 }),
    EJECT_AFTER_FAILURES: env.int({ default: 3, min: 1 }),
    EJECT_COOLDOWN: env.duration({ default: 5_000, min: 1 }),
    HEALTH_CHECK_INTERVAL: env.duration({ default: 5_000, min: 0 }),
    JWKS_CACHE: env.duration({ default: 60_000, min: 0 }),
    TOKEN_CACHE: kit.TOKEN_CACHE,
    /** Least time between two key fetches triggered by unknown kids. */
    JWKS_COOLDOWN: env.duration({ default: 30_000, min: 0 }),
  };
}

/** The gateway's parsed, frozen configuration. */
export type GatewayConfig = ConfigOf<ReturnType<typeof gatewayConfigSchema>>;

/** Reads the gateway's configuration; throws a ConfigError naming every bad variable. */
export function loadGatewayConfig(source: ConfigSource): GatewayConfig {
  const config = loadConfig(gatewayConfigSchema(), source);
  if (config.DEFAULT_TIMEOUT > config.MAX_TIMEOUT) {
    throw new ConfigError([{ variable: "DEFAULT_TIMEOUT", problem: "must not exceed MAX_TIMEOUT" }]);
  }
  return config;
}

/** The upstream addresses of each service, as configured. */
export function upstreamAddresses(config: GatewayConfig): Record<UpstreamName, readonly string[]> {
  return {
    auth: config.AUTH_ADDRS,
    analytics: config.ANALYTICS_ADDRS,
    billing: config.BILLING_ADDRS,
    core: config.CORE_ADDRS,
  };
}
