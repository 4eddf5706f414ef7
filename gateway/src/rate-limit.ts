import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { RetryInfoSchema } from "@trellis/gen/google/rpc/error_details_pb.js";
import { principalKey } from "@trellis/kit/context.js";
import { clientAddressKey } from "./context.js";

/** A token bucket: `burst` tokens at most, refilled at `rate` tokens per second. */
export interface BucketSpec {
  readonly rate: number;
  readonly burst: number;
}

/** Who a bucket counts: the client address, the signed-in user, or the user's tenant. */
export type Scope = "address" | "user" | "tenant";

/** Limits per scope; null turns a scope off, an absent scope falls back to the default's. */
export type ScopeLimits = Readonly<Partial<Record<Scope, BucketSpec | null>>>;

/** The whole rate limit configuration (RATE_LIMITS). */
export interface RateLimits {
  /** Shared buckets for every method without its own limit for a scope. */
  readonly default: ScopeLimits;
  /** Per method ("trellis.auth.v1.AuthService/Login"): its own buckets for the scopes it names. */
  readonly methods: Readonly<Record<string, ScopeLimits>>;
}

const scopes: readonly Scope[] = ["address", "user", "tenant"];

/** The built-in limits; RATE_LIMITS overrides them scope by scope and method by method. */
export const builtInRateLimits: RateLimits = {
  default: {
    address: { rate: 100, burst: 200 },
    user: { rate: 50, burst: 100 },
    tenant: { rate: 200, burst: 400 },
  },
  methods: {
    // Password guessing: ten tries a minute per address.
    "trellis.auth.v1.AuthService/Login": { address: { rate: 1 / 6, burst: 10 } },
    "trellis.auth.v1.AuthService/SignUp": { address: { rate: 1 / 6, burst: 10 } },
  },
};

function parseScopes(value: unknown, where: string): ScopeLimits {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error(`${where} must be an object of scopes`);
  }
  const out: Partial<Record<Scope, BucketSpec | null>> = {};
  for (const [scope, spec] of Object.entries(value)) {
    if (!scopes.includes(scope as Scope)) throw new Error(`${where}: unknown scope ${scope}`);
    if (spec === null || spec === false) {
      out[scope as Scope] = null;
      continue;
    }
    const { rate, burst } = (spec ?? {}) as { rate?: unknown; burst?: unknown };
    if (typeof rate !== "number" || !(rate > 0) || typeof burst !== "number" || !(burst >= 1)) {
      throw new Error(`${where}.${scope} needs rate > 0 (per second) and burst >= 1`);
    }
    out[scope as Scope] = { rate, burst };
  }
  return out;
}

/**
 * Parses RATE_LIMITS JSON, e.g.
 * `{"default":{"address":{"rate":50,"burst":100}},"methods":{"trellis.auth.v1.AuthService/Login":{"address":{"rate":0.1,"burst":5}}}}`,
 * on top of the built-in limits.
 */
export function parseRateLimits(raw: string): RateLimits {
  const parsed = JSON.parse(raw) as unknown;
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new Error("RATE_LIMITS must be a JSON object");
  }
  const { default: def, methods, ...rest } = parsed as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) throw new Error(`unknown keys: ${unknown.join(", ")}`);
  const result = {
    default: { ...builtInRateLimits.default, ...(def === undefined ? {} : parseScopes(def, "default")) },
    methods: { ...builtInRateLimits.methods } as Record<string, ScopeLimits>,
  };
  if (methods !== undefined) {
    if (typeof methods !== "object" || methods === null) throw new Error("methods must be an object");
    for (const [name, value] of Object.entries(methods)) {
      if (!/^[\w.]+\/\w+$/.test(name)) throw new Error(`method ${name} must read <package.Service>/<Method>`);
      result.methods[name] = parseScopes(value, `methods["${name}"]`);
    }
  }
  return result;
}

interface Bucket {
  tokens: number;
  last: number;
  readonly spec: BucketSpec;
}

/** Token buckets by method and identity, in bounded memory. */
export interface RateLimiter {
  /**
   * Takes a token from every bucket of method for the given identities when each has one, and
   * answers 0; otherwise takes none and answers the seconds until all would have one.
   */
  take(method: string, identities: Readonly<Partial<Record<Scope, string>>>): number;
  /** Buckets held now. */
  readonly size: number;
  /** Drops buckets that have refilled completely (they equal fresh ones). */
  sweep(): void;
}

/** Options of createRateLimiter. */
export interface RateLimiterOptions {
  readonly limits: RateLimits;
  /** Clock in milliseconds (tests inject one). */
  readonly now?: () => number;
  /** Most buckets kept; the least recently used go first (default 100 000). */
  readonly maxBuckets?: number;
}

/** Creates an in-memory token bucket limiter; each gateway instance limits on its own. */
export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const { limits } = options;
  const now = options.now ?? Date.now;
  const maxBuckets = options.maxBuckets ?? 100_000;
  const buckets = new Map<string, Bucket>();

  const refill = (bucket: Bucket, at: number) => {
    const elapsed = Math.max(0, at - bucket.last) / 1000;
    bucket.tokens = Math.min(bucket.spec.burst, bucket.tokens + elapsed * bucket.spec.rate);
    bucket.last = at;
  };
  const bucketFor = (key: string, spec: BucketSpec, at: number): Bucket => {
    let bucket = buckets.get(key);
    if (bucket) {
      buckets.delete(key);
      refill(bucket, at);
    } else {
      bucket = { tokens: spec.burst, last: at, spec };
    }
    // Re-inserting keeps the map in least-recently-used order.
    buckets.set(key, bucket);
    if (buckets.size > maxBuckets) {
      const oldest = buckets.keys().next().value;
      if (oldest !== undefined) buckets.delete(oldest);
    }
    return bucket;
  };

  return {
    take(method, identities) {
      const at = now();
      const own = limits.methods[method];
      const chosen: Bucket[] = [];
      let wait = 0;
      for (const scope of scopes) {
        const id = identities[scope];
        if (id === undefined) continue;
        const ownSpec = own?.[scope];
        const spec = ownSpec === undefined ? limits.default[scope] : ownSpec;
        if (!spec) continue;
        const group = ownSpec === undefined ? "*" : method;
        const bucket = bucketFor(`${group}\u0000${scope}\u0000${id}`, spec, at);
        if (bucket.tokens < 1) wait = Math.max(wait, (1 - bucket.tokens) / spec.rate);
        chosen.push(bucket);
      }
      if (wait > 0) return wait;
      for (const bucket of chosen) bucket.tokens -= 1;
      return 0;
    },
    get size() {
      return buckets.size;
    },
    sweep() {
      const at = now();
      for (const [key, bucket] of buckets) {
        refill(bucket, at);
        if (bucket.tokens >= bucket.spec.burst) buckets.delete(key);
      }
    },
  };
}

/** The resource_exhausted error of a limited call: Retry-After (seconds) and a google.rpc.RetryInfo. */
export function rateLimitedError(waitSeconds: number): ConnectError {
  const seconds = Math.max(1, Math.ceil(waitSeconds));
  return new ConnectError("rate limit exceeded", Code.ResourceExhausted, { "retry-after": String(seconds) }, [
    { desc: RetryInfoSchema, value: { retryDelay: { seconds: BigInt(seconds) } } },
  ]);
}

/**
 * Server interceptors applying limiter: `byAddress` (before authentication, so floods cost no
 * token checks) and `byPrincipal` (after it, per user and per tenant). onLimited counts refusals.
 */
export function createRateLimitInterceptors(
  limiter: RateLimiter,
  onLimited: (scope: "address" | "principal", method: string) => void = () => {},
): { byAddress: Interceptor; byPrincipal: Interceptor } {
  const nameOf = (req: { service: { typeName: string }; method: { name: string } }) =>
    `${req.service.typeName}/${req.method.name}`;
  return {
    byAddress: (next) => (req) => {
      const method = nameOf(req);
      const wait = limiter.take(method, { address: req.contextValues.get(clientAddressKey) });
      if (wait > 0) {
        onLimited("address", method);
        throw rateLimitedError(wait);
      }
      return next(req);
    },
    byPrincipal: (next) => (req) => {
      const principal = req.contextValues.get(principalKey);
      if (!principal) return next(req);
      const method = nameOf(req);
      const wait = limiter.take(method, { user: principal.userId, tenant: principal.tenantId });
      if (wait > 0) {
        onLimited("principal", method);
        throw rateLimitedError(wait);
      }
      return next(req);
    },
  };
}
