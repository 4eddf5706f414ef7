import { fileURLToPath } from "node:url";
import type { ConnectRouter } from "@connectrpc/connect";
import { AuthService, file_trellis_auth_v1_auth } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import type { ConfigSource } from "@trellis/kit/config.js";
import type { ServiceDefinition } from "@trellis/kit/service.js";
import { createTokenVerifier, type TokenVerifier } from "@trellis/kit/tokens.js";
import { createAccountHandlers } from "./accounts.ts";
import { type AuthConfig, loadAuthConfig } from "./config.ts";
import { createGrants } from "./grants.ts";
import { createSigningKeys, type RotationResult, type SigningKeys } from "./keys.ts";
import { createMemberHandlers } from "./members.ts";
import { createMfaHandlers } from "./mfa.ts";
import { createPasswordHasher } from "./passwords.ts";
import { createRoleHandlers } from "./roles.ts";
import { createSealer } from "./secrets.ts";
import { createSessionHandlers } from "./sessions.ts";
import type { AuthDeps } from "./sign-in.ts";
import { createStore, type Store } from "./store.ts";
import { createThrottle } from "./throttle.ts";

/** Directory of auth's SQL migrations. */
export const migrationsDir = fileURLToPath(new URL("../migrations", import.meta.url));

/** Registers every AuthService handler built from deps. */
export function build(deps: AuthDeps): (router: ConnectRouter) => void {
  return (router) =>
    router.service(AuthService, {
      ...createAccountHandlers(deps),
      ...createSessionHandlers(deps),
      ...createMfaHandlers(deps),
      ...createRoleHandlers(deps),
      ...createMemberHandlers(deps),
      getJwks: async () => ({
        keys: (await deps.keys.jwks()).map((k) => ({
          kty: k.kty ?? "",
          crv: k.crv ?? "",
          x: k.x ?? "",
          y: k.y ?? "",
          kid: k.kid ?? "",
          alg: k.alg ?? "",
          use: k.use ?? "sig",
        })),
      }),
    });
}

/** A started auth service's internals, for tests, benchmarks and operators' scripts. */
export interface AuthApp {
  readonly store: Store;
  readonly keys: SigningKeys;
  /** Verifies auth's own access tokens from its database keys (no HTTP round trip). */
  readonly verifier: TokenVerifier;
  /** Runs key rotation now (see SigningKeys.rotate); the service also runs it on a timer. */
  rotateKeys(options?: { force?: boolean }): Promise<RotationResult>;
}

/** Options of createAuthService beyond the environment. */
export interface AuthServiceOptions {
  /** The time TOTP codes are checked and signing keys aged by; Date.now by default. */
  readonly clock?: () => number;
}

/**
 * Auth's service definition for the kit's runService/startTestService, with its settings read
 * from source, and app() to reach the instance's internals once it has started.
 */
export function createAuthService(source: ConfigSource, options: AuthServiceOptions = {}) {
  const config: AuthConfig = loadAuthConfig(source);
  let app: AuthApp | undefined;
  const definition: ServiceDefinition = {
    name: "auth",
    defaultPort: 8001,
    files: [file_trellis_auth_v1_auth],
    migrationsDir,
    stream: { name: config.AUTH_STREAM_NAME, subjects: [`${config.AUTH_SUBJECT_PREFIX}.>`] },
    async create(kit) {
      if (!kit.sql) throw new Error("auth needs DATABASE_URL");
      const store = createStore(kit.sql, {
        subjectPrefix: config.AUTH_SUBJECT_PREFIX,
        injectTrace: kit.injectTrace,
      });
      const key = config.AUTH_ENCRYPTION_KEY;
      const sealer = createSealer(key === undefined ? undefined : Buffer.from(key, "base64"));
      const keys = createSigningKeys({
        store,
        sealer,
        alg: config.JWT_ALG,
        issuer: kit.config.JWT_ISSUER,
        audience: kit.config.JWT_AUDIENCE,
        accessTtlMs: config.ACCESS_TOKEN_TTL,
        maxAgeMs: config.SIGNING_KEY_MAX_AGE,
        retireMarginMs: config.SIGNING_KEY_RETIRE_MARGIN,
        publishLeadMs: config.SIGNING_KEY_PUBLISH_LEAD,
        clock: options.clock,
      });
      await keys.init();
      const passwords = await createPasswordHasher({
        concurrency: config.PASSWORD_HASH_CONCURRENCY,
        maxQueue: config.PASSWORD_HASH_QUEUE,
      });
      const deps: AuthDeps = {
        store,
        keys,
        sealer,
        config,
        logger: kit.logger,
        clock: options.clock ?? Date.now,
        passwords,
        throttle: createThrottle(store, {
          maxFailuresPerAccount: config.LOGIN_MAX_FAILURES,
          maxFailuresPerAddress: config.LOGIN_MAX_FAILURES_PER_ADDRESS,
          windowMs: config.LOGIN_FAILURE_WINDOW,
          lockMs: config.LOGIN_LOCKOUT,
          maxLockMs: config.LOGIN_LOCKOUT_MAX,
        }),
        grants: createGrants(config.AUTH_GRANT_TEST_PERMISSIONS),
      };
      const verifier = createTokenVerifier({
        getKey: keys.getKey,
        issuer: kit.config.JWT_ISSUER,
        audience: kit.config.JWT_AUDIENCE,
      });
      app = { store, keys, verifier, rotateKeys: (o) => keys.rotate(o) };

      let timer: NodeJS.Timeout | undefined;
      const maintain = async () => {
        try {
          const rotated = await keys.rotate();
          if (rotated.created || rotated.deleted.length > 0) kit.logger.info(rotated, "signing keys rotated");
          await store.purge(config.LOGIN_FAILURE_WINDOW);
        } catch (error) {
          kit.logger.warn({ err: error }, "auth maintenance failed; retrying at the next interval");
        }
      };
      return {
        routes: build(deps),
        tokens: verifier,
        // The other services verify tokens against this (their JWKS_URL), on auth's admin port.
        adminRoutes: {
          "/.well-known/jwks.json": async () => ({
            contentType: "application/json",
            body: JSON.stringify({ keys: await keys.jwks() }),
          }),
        },
        async start() {
          timer = setInterval(maintain, config.SIGNING_KEY_CHECK_INTERVAL);
          timer.unref();
        },
        async stop() {
          clearInterval(timer);
          await passwords.close();
        },
      };
    },
  };
  return {
    definition,
    config,
    /** The running instance's internals; throws before the service has started. */
    app(): AuthApp {
      if (!app) throw new Error("auth service not started");
      return app;
    },
  };
}
