import { type DescMethod, getOption } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  type Client,
  Code,
  ConnectError,
  createClient,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AnalyticsService } from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { AuthService, type Tokens } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { BillingService } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { Audience, access } from "@trellis/gen/trellis/common/v1/options_pb.js";
import { CoreService } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { claimsOf, type SessionStore, type StoredSession } from "./session.ts";

/** Refresh this long before the access token expires, so calls rarely meet an expired one. */
const refreshMarginMs = 30_000;

/** The gateway's four services, signed in as the session's user, plus session actions. */
export interface Api {
  readonly auth: Client<typeof AuthService>;
  readonly core: Client<typeof CoreService>;
  readonly billing: Client<typeof BillingService>;
  readonly analytics: Client<typeof AnalyticsService>;
  /** Trades the refresh token for new tokens (one at a time); false when the session is over. */
  refresh(): Promise<boolean>;
  /** Keeps the tokens of a successful sign-in. */
  signIn(tokens: Tokens, email: string): void;
  /** Logs the session out at auth (best effort) and forgets it here. */
  signOut(): Promise<void>;
}

/** Where the API talks to and what it keeps the session in. */
export interface ApiOptions {
  /** The gateway's origin; the console is served by the gateway, so this is the page's own origin. */
  readonly baseUrl: string;
  readonly session: SessionStore;
  /** Called once the session is over (refresh refused): the app goes back to the login page. */
  readonly onSignedOut?: () => void;
  /** Builds the transport (tests pass an in-memory one); Connect over fetch by default. */
  readonly transport?: (baseUrl: string, interceptors: Interceptor[]) => Transport;
  readonly now?: () => number;
}

/** What the console stores from a Tokens message. */
export function toStoredSession(tokens: Tokens, email: string): StoredSession {
  const expires = tokens.accessTokenExpiresAt
    ? timestampMs(tokens.accessTokenExpiresAt)
    : (claimsOf(tokens.accessToken)?.expiresAt ?? 0);
  return {
    accessToken: tokens.accessToken,
    refreshToken: tokens.refreshToken,
    accessExpiresAt: expires,
    sessionId: tokens.sessionId,
    email,
  };
}

function isPublic(method: DescMethod): boolean {
  return getOption(method, access).audience === Audience.PUBLIC;
}

/** Creates the clients: bearer token on every non-public call, one refresh-and-retry on unauthenticated. */
export function createApi(options: ApiOptions): Api {
  const { session } = options;
  const now = options.now ?? Date.now;
  let pending: Promise<boolean> | undefined;

  const signedOut = () => {
    session.clear();
    options.onSignedOut?.();
  };

  const authorize: Interceptor = (next) => async (req) => {
    if (isPublic(req.method)) return next(req);
    let current = session.get();
    if (current && current.accessExpiresAt - now() < refreshMarginMs) {
      // A failed early refresh is not fatal: the token may still be good for a few seconds.
      await refresh().catch(() => false);
      current = session.get();
    }
    if (current) req.header.set("authorization", `Bearer ${current.accessToken}`);
    try {
      return await next(req);
    } catch (error) {
      if (ConnectError.from(error).code !== Code.Unauthenticated) throw error;
      if (!current) {
        signedOut();
        throw error;
      }
      // A stream's request body is consumed; its caller restarts it after refresh().
      if (req.stream || !(await refresh())) throw error;
      req.header.set("authorization", `Bearer ${session.get()?.accessToken ?? ""}`);
      return await next(req);
    }
  };

  const transport = (options.transport ?? defaultTransport)(options.baseUrl, [authorize]);
  const auth = createClient(AuthService, transport);

  const doRefresh = async (): Promise<boolean> => {
    const current = session.get();
    if (!current) return false;
    try {
      const { tokens } = await auth.refresh({ refreshToken: current.refreshToken });
      if (!tokens) throw new ConnectError("no tokens in the refresh answer", Code.Unauthenticated);
      session.set(toStoredSession(tokens, current.email));
      return true;
    } catch (error) {
      const code = ConnectError.from(error).code;
      if (code === Code.Unauthenticated || code === Code.InvalidArgument || code === Code.NotFound) {
        signedOut();
        return false;
      }
      throw error;
    }
  };
  function refresh(): Promise<boolean> {
    pending ??= doRefresh().finally(() => {
      pending = undefined;
    });
    return pending;
  }

  return {
    auth,
    core: createClient(CoreService, transport),
    billing: createClient(BillingService, transport),
    analytics: createClient(AnalyticsService, transport),
    refresh,
    signIn(tokens, email) {
      session.set(toStoredSession(tokens, email));
    },
    async signOut() {
      if (session.get()) await auth.logout({}).catch(() => {});
      signedOut();
    },
  };
}

function defaultTransport(baseUrl: string, interceptors: Interceptor[]): Transport {
  return createConnectTransport({ baseUrl, interceptors });
}
