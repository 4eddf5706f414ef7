import { type ConfigOf, type ConfigSource, env, loadConfig } from "@trellis/kit/config.js";
import { maxAccessTokenLifetimeSec } from "@trellis/kit/tokens.js";

const hour = 3_600_000;

// Kept as the base64 text: loadConfig freezes values, and a Buffer cannot be frozen.
function encryptionKey(raw: string): string {
  if (Buffer.from(raw, "base64").length !== 32) throw new Error("must be 32 bytes, base64-encoded");
  return raw;
}

function subjectPrefix(raw: string): string {
  if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(raw)) throw new Error("must be dot-separated NATS tokens");
  return raw;
}

/** Auth's own variables (the kit's are read by the kit); every one has a default except none. */
export const authConfigSchema = {
  ACCESS_TOKEN_TTL: env.duration({
    default: 15 * 60_000,
    min: 10_000,
    max: maxAccessTokenLifetimeSec * 1000,
  }),
  REFRESH_TOKEN_TTL: env.duration({ default: 30 * 24 * hour, min: 60_000 }),
  SESSION_MAX_AGE: env.duration({ default: 90 * 24 * hour, min: 60_000 }),
  JWT_ALG: env.enum(["ES256", "EdDSA"], { default: "ES256" }),
  SIGNING_KEY_MAX_AGE: env.duration({ default: 7 * 24 * hour, min: 60_000 }),
  SIGNING_KEY_RETIRE_MARGIN: env.duration({ default: 5 * 60_000, min: 0 }),
  SIGNING_KEY_PUBLISH_LEAD: env.duration({ default: 5 * 60_000, min: 0 }),
  SIGNING_KEY_CHECK_INTERVAL: env.duration({ default: 60_000, min: 1000 }),
  AUTH_ENCRYPTION_KEY: env.custom(encryptionKey, { optional: true, secret: true }),
  LOGIN_MAX_FAILURES: env.int({ default: 5, min: 1 }),
  LOGIN_MAX_FAILURES_PER_ADDRESS: env.int({ default: 20, min: 1 }),
  LOGIN_FAILURE_WINDOW: env.duration({ default: 15 * 60_000, min: 1000 }),
  LOGIN_LOCKOUT: env.duration({ default: 60_000, min: 1000 }),
  LOGIN_LOCKOUT_MAX: env.duration({ default: hour, min: 1000 }),
  PASSWORD_HASH_CONCURRENCY: env.int({ default: 0, min: 0, max: 64 }),
  PASSWORD_HASH_QUEUE: env.int({ default: 256, min: 1 }),
  INVITE_TTL: env.duration({ default: 7 * 24 * hour, min: 60_000 }),
  TOTP_ISSUER: env.string({ default: "Trellis" }),
  TRUSTED_PROXY_HOPS: env.int({ default: 1, min: 0, max: 10 }),
  AUTH_STREAM_NAME: env.string({ default: "AUTH" }),
  AUTH_SUBJECT_PREFIX: env.custom(subjectPrefix, { default: "trellis.auth" }),
  AUTH_GRANT_TEST_PERMISSIONS: env.bool({ default: false }),
};

/** Auth's parsed, frozen settings. */
export type AuthConfig = ConfigOf<typeof authConfigSchema>;

/** Parses auth's variables from source; throws a ConfigError naming every bad one. */
export function loadAuthConfig(source: ConfigSource): AuthConfig {
  return loadConfig(authConfigSchema, source);
}
