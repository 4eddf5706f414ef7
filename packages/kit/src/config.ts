import { accessSync, constants } from "node:fs";

/** The raw environment a config is read from: the service's main passes `process.env`. */
export type ConfigSource = Readonly<Record<string, string | undefined>>;

/** A default value, or one derived from the variables read before it (schema order). */
export type DefaultValue<T> = T | ((earlier: Readonly<Record<string, unknown>>) => T | undefined);

/** How one environment variable is read; build specs with the `env.*` builders. */
export interface VarSpec<T> {
  /** Returns the value, or throws a `ProblemText` naming what is wrong with the raw text. */
  read(name: string, source: ConfigSource, earlier: Readonly<Record<string, unknown>>): T;
}

/** Options every builder takes. */
export interface CommonOptions<T> {
  /** Used when the variable is unset or empty. */
  readonly default?: DefaultValue<T>;
  /** When true an unset variable reads as undefined instead of failing. */
  readonly optional?: boolean;
  /** Variables that must be set together with this one (all or none). */
  readonly together?: readonly string[];
  /** Never echo the raw value in an error message. */
  readonly secret?: boolean;
}

type Optional = { readonly optional: true };

/** A schema maps environment variable names to specs. */
export type ConfigSchema = Readonly<Record<string, VarSpec<unknown>>>;

/** The frozen, typed object `loadConfig` returns for a schema. */
export type ConfigOf<S extends ConfigSchema> = {
  readonly [K in keyof S]: S[K] extends VarSpec<infer T> ? T : never;
};

/** One thing wrong with one variable. */
export interface ConfigProblem {
  readonly variable: string;
  readonly problem: string;
}

/** Thrown by `loadConfig`: its message names every missing or malformed variable. */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(readonly problems: readonly ConfigProblem[]) {
    super(`invalid configuration: ${problems.map((p) => `${p.variable}: ${p.problem}`).join("; ")}`);
  }
}

class ProblemText extends Error {}

function shown(raw: string, secret: boolean | undefined): string {
  if (secret) return "";
  const clipped = raw.length > 60 ? `${raw.slice(0, 57)}...` : raw;
  return `: '${clipped}'`;
}

function build<T, O extends CommonOptions<T>>(
  parse: (raw: string, options: O) => T,
  options: O,
): VarSpec<T | undefined> {
  return {
    read(name, source, earlier) {
      const raw = source[name];
      if (raw !== undefined && raw.trim() !== "") {
        try {
          return parse(raw.trim(), options);
        } catch (error) {
          const reason = error instanceof ProblemText ? error.message : String(error);
          throw new ProblemText(`${reason}${shown(raw, options.secret)}`);
        }
      }
      const missingPartners = (options.together ?? []).filter((other) => source[other]?.trim());
      if (missingPartners.length > 0) {
        throw new ProblemText(`missing (required together with ${missingPartners.join(", ")})`);
      }
      const fallback = options.default;
      const value =
        typeof fallback === "function" ? (fallback as (e: typeof earlier) => T)(earlier) : fallback;
      if (value !== undefined || options.optional) return value;
      throw new ProblemText("missing");
    },
  };
}

function parseInteger(raw: string, min?: number, max?: number): number {
  if (!/^-?\d+$/.test(raw)) throw new ProblemText("not an integer");
  const value = Number(raw);
  if (!Number.isSafeInteger(value)) throw new ProblemText("not an integer");
  if (min !== undefined && value < min) throw new ProblemText(`must be >= ${min}`);
  if (max !== undefined && value > max) throw new ProblemText(`must be <= ${max}`);
  return value;
}

const durationUnits: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

const booleanWords: Readonly<Record<string, boolean>> = {
  true: true,
  "1": true,
  yes: true,
  on: true,
  false: false,
  "0": false,
  no: false,
  off: false,
};

/** Options of `env.int` and `env.duration`. */
export interface RangeOptions<T> extends CommonOptions<T> {
  readonly min?: number;
  readonly max?: number;
}

/** Options of `env.url`. */
export interface UrlOptions extends CommonOptions<string> {
  /** Allowed schemes without the colon, e.g. ["postgres", "postgresql"]. */
  readonly protocols?: readonly string[];
}

/** Any non-empty text. */
function string(options: CommonOptions<string> & Optional): VarSpec<string | undefined>;
function string(options?: CommonOptions<string>): VarSpec<string>;
function string(options: CommonOptions<string> = {}) {
  return build((raw) => raw, options);
}

/** A base-10 integer, optionally bounded. */
function int(options: RangeOptions<number> & Optional): VarSpec<number | undefined>;
function int(options?: RangeOptions<number>): VarSpec<number>;
function int(options: RangeOptions<number> = {}) {
  return build((raw, o) => parseInteger(raw, o.min, o.max), options);
}

/** A TCP port, 0 to 65535 (0 lets the OS choose). */
function port(options: CommonOptions<number> & Optional): VarSpec<number | undefined>;
function port(options?: CommonOptions<number>): VarSpec<number>;
function port(options: CommonOptions<number> = {}) {
  return build((raw) => parseInteger(raw, 0, 65535), options);
}

/** true/false, 1/0, yes/no, on/off (any case). */
function bool(options: CommonOptions<boolean> & Optional): VarSpec<boolean | undefined>;
function bool(options?: CommonOptions<boolean>): VarSpec<boolean>;
function bool(options: CommonOptions<boolean> = {}) {
  return build((raw) => {
    const value = booleanWords[raw.toLowerCase()];
    if (value === undefined) throw new ProblemText("not a boolean (true/false)");
    return value;
  }, options);
}

/** An absolute URL, returned as written; never echoed in errors since URLs carry credentials. */
function url(options: UrlOptions & Optional): VarSpec<string | undefined>;
function url(options?: UrlOptions): VarSpec<string>;
function url(options: UrlOptions = {}) {
  return build(
    (raw, o) => {
      let parsed: URL;
      try {
        parsed = new URL(raw);
      } catch {
        throw new ProblemText("not a valid URL");
      }
      const scheme = parsed.protocol.replace(/:$/, "");
      if (o.protocols && !o.protocols.includes(scheme)) {
        throw new ProblemText(`scheme must be one of ${o.protocols.join(", ")}, not ${scheme}`);
      }
      return raw;
    },
    { secret: true, ...options },
  );
}

/** One of the given words. */
function oneOf<const V extends readonly [string, ...string[]]>(
  values: V,
  options: CommonOptions<V[number]> & Optional,
): VarSpec<V[number] | undefined>;
function oneOf<const V extends readonly [string, ...string[]]>(
  values: V,
  options?: CommonOptions<V[number]>,
): VarSpec<V[number]>;
function oneOf<const V extends readonly [string, ...string[]]>(
  values: V,
  options: CommonOptions<V[number]> = {},
) {
  return build((raw) => {
    if (!values.includes(raw)) throw new ProblemText(`must be one of ${values.join(", ")}`);
    return raw as V[number];
  }, options);
}

/** Milliseconds: an integer ("250") or a number with a unit ("200ms", "5s", "1m", "1h"). */
function duration(options: RangeOptions<number> & Optional): VarSpec<number | undefined>;
function duration(options?: RangeOptions<number>): VarSpec<number>;
function duration(options: RangeOptions<number> = {}) {
  return build((raw, o) => {
    const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(raw);
    const unit = durationUnits[match?.[2] ?? "ms"];
    if (!match || unit === undefined) throw new ProblemText("not a duration (e.g. 500, 200ms, 5s, 1m)");
    return parseInteger(String(Math.round(Number(match[1]) * unit)), o.min, o.max);
  }, options);
}

/** A path to a readable file (a PEM, say), checked at load and returned as the path. */
function file(options: CommonOptions<string> & Optional): VarSpec<string | undefined>;
function file(options?: CommonOptions<string>): VarSpec<string>;
function file(options: CommonOptions<string> = {}) {
  return build((raw) => {
    try {
      accessSync(raw, constants.R_OK);
    } catch {
      throw new ProblemText("not a readable file");
    }
    return raw;
  }, options);
}

/** Anything else: parse throws an Error whose message says what is wrong. */
function custom<T>(parse: (raw: string) => T, options: CommonOptions<T> & Optional): VarSpec<T | undefined>;
function custom<T>(parse: (raw: string) => T, options?: CommonOptions<T>): VarSpec<T>;
function custom<T>(parse: (raw: string) => T, options: CommonOptions<T> = {}) {
  return build((raw) => {
    try {
      return parse(raw);
    } catch (error) {
      throw new ProblemText(error instanceof Error ? error.message : String(error));
    }
  }, options);
}

/** Spec builders for `loadConfig` schemas; each one reads one variable. */
export const env = { string, int, port, bool, url, enum: oneOf, duration, file, custom };

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** Reads every variable of schema from source once; throws one ConfigError naming every problem. */
export function loadConfig<S extends ConfigSchema>(schema: S, source: ConfigSource): ConfigOf<S> {
  const values: Record<string, unknown> = {};
  const problems: ConfigProblem[] = [];
  for (const [name, spec] of Object.entries(schema)) {
    try {
      values[name] = spec.read(name, source, values);
    } catch (error) {
      if (!(error instanceof ProblemText)) throw error;
      problems.push({ variable: name, problem: error.message });
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return deepFreeze(values) as ConfigOf<S>;
}

/** pino's level names, for LOG_LEVEL. */
export const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** The variables every Trellis service reads; spread it and add or override the service's own. */
export function kitConfigSchema(defaultPort: number) {
  const tls = ["TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CA_FILE"] as const;
  const tlsFile = (name: (typeof tls)[number]) =>
    env.file({ optional: true, together: tls.filter((other) => other !== name) });
  return {
    PORT: env.port({ default: defaultPort }),
    // The admin port follows PORT (an ephemeral PORT=0 gives an ephemeral admin port); a malformed
    // PORT is reported once, on PORT.
    ADMIN_PORT: env.port({
      default: (earlier) => {
        const port = typeof earlier.PORT === "number" ? earlier.PORT : defaultPort;
        return port === 0 ? 0 : port + 1000;
      },
    }),
    HOST: env.string({ default: "0.0.0.0" }),
    LOG_LEVEL: env.enum(logLevels, { default: "info" }),
    OTEL_EXPORTER_OTLP_ENDPOINT: env.url({ optional: true, protocols: ["http", "https"] }),
    TLS_CERT_FILE: tlsFile("TLS_CERT_FILE"),
    TLS_KEY_FILE: tlsFile("TLS_KEY_FILE"),
    TLS_CA_FILE: tlsFile("TLS_CA_FILE"),
    TRUST_FORWARDED_IDENTITY: env.bool({ default: false }),
    SHUTDOWN_GRACE_MS: env.duration({ default: 10_000, min: 0 }),
    JWKS_URL: env.url({ optional: true, protocols: ["http", "https"] }),
    JWT_ISSUER: env.string({ default: "trellis-auth" }),
    JWT_AUDIENCE: env.string({ default: "trellis" }),
    /** How long a verified access token is trusted before its signature is checked again; 0 checks every call. */
    TOKEN_CACHE: env.duration({ default: 60_000, min: 0 }),
    NATS_URL: env.url({ default: "nats://127.0.0.1:4222", protocols: ["nats", "tls"] }),
    DATABASE_URL: env.url({ optional: true, protocols: ["postgres", "postgresql"] }),
    // 1 against PGlite (the embedded store of `npm start`), which serves one connection at a time.
    DATABASE_POOL_MAX: env.int({ default: 10, min: 1, max: 200 }),
  };
}

/** The config every service has (see kitConfigSchema). */
export type KitConfig = ConfigOf<ReturnType<typeof kitConfigSchema>>;

/** The three TLS file paths when all are configured, else undefined (TLS off). */
export function tlsFiles(
  config: Pick<KitConfig, "TLS_CERT_FILE" | "TLS_KEY_FILE" | "TLS_CA_FILE">,
): { readonly cert: string; readonly key: string; readonly ca: string } | undefined {
  const { TLS_CERT_FILE: cert, TLS_KEY_FILE: key, TLS_CA_FILE: ca } = config;
  return cert && key && ca ? { cert, key, ca } : undefined;
}
