import { type AddressInfo, createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import {
  create,
  type DescMethod,
  type DescService,
  type MessageShape,
  toJsonString,
} from "@bufbuild/protobuf";
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { AnalyticsService } from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { AuthService } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { BillingService } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { CoreService } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { createAccessInterceptor, methodAccess } from "@trellis/kit/access.js";
import { callerServiceKey, principalKey, requestIdKey } from "@trellis/kit/context.js";
import { createLogger } from "@trellis/kit/logger.js";
import { type RunningService, startService } from "@trellis/kit/server.js";
import type { TestIssuer } from "@trellis/kit/test-tokens.js";
import { Registry } from "prom-client";
import { type GatewayConfig, loadGatewayConfig } from "../../src/config.js";
import { type Gateway, startGateway } from "../../src/gateway.js";

/** A handler override: answers (or throws) instead of the stub's empty response. */
export type StubHook = (request: unknown, ctx: HandlerContext) => unknown;

/** Every call a stub backend received: method name and the instance name. */
export interface StubCall {
  readonly method: string;
  readonly instance: string;
}

/** A stub backend: the real generated services, empty answers, identity echoed in headers. */
export interface StubBackend {
  readonly name: string;
  readonly url: string;
  readonly calls: StubCall[];
  readonly running: RunningService;
  close(): Promise<void>;
}

/** The four services' descriptors. */
export const allServices: readonly DescService[] = [
  AuthService,
  AnalyticsService,
  BillingService,
  CoreService,
];

/** Every permission any method of the four services declares. */
export const allPermissions: readonly string[] = [
  ...new Set(
    allServices.flatMap((s) => s.methods.map((m) => methodAccess(m)?.permission ?? "")).filter((p) => p),
  ),
];

function stubRoutes(
  services: readonly DescService[],
  name: string,
  calls: StubCall[],
  hooks: Readonly<Record<string, StubHook>>,
) {
  const echo = (method: DescMethod, request: unknown, ctx: HandlerContext) => {
    calls.push({ method: method.name, instance: name });
    const h = ctx.responseHeader;
    h.set("x-stub-instance", name);
    h.set("x-stub-method", `${method.parent.typeName}/${method.name}`);
    h.set("x-stub-user", ctx.values.get(principalKey)?.userId ?? "");
    h.set("x-stub-caller", ctx.values.get(callerServiceKey) ?? "");
    h.set("x-stub-request-id", ctx.values.get(requestIdKey));
    h.set("x-stub-forwarded-for", ctx.requestHeader.get("x-forwarded-for") ?? "");
    h.set("x-stub-timeout-ms", String(ctx.timeoutMs() ?? ""));
    h.set(
      "x-stub-input",
      encodeURIComponent(toJsonString(method.input, request as MessageShape<typeof method.input>)),
    );
  };
  return (router: ConnectRouter) => {
    for (const service of services) {
      for (const method of service.methods) {
        const hook = hooks[method.name];
        if (method.methodKind === "server_streaming") {
          router.rpc(method, async function* (request: unknown, ctx: HandlerContext) {
            echo(method, request, ctx);
            if (hook) {
              yield* (await hook(request, ctx)) as AsyncIterable<never>;
              return;
            }
            for (let i = 0; i < 3; i++) yield create(method.output) as never;
          } as never);
        } else if (method.methodKind === "unary") {
          router.rpc(method, (async (request: unknown, ctx: HandlerContext) => {
            echo(method, request, ctx);
            return hook ? await hook(request, ctx) : create(method.output);
          }) as never);
        }
      }
    }
  };
}

/** Starts a stub backend of services on 127.0.0.1:0 verifying tokens of issuer, as a real service would. */
export async function startStubBackend(
  name: string,
  issuer: TestIssuer,
  options: {
    services?: readonly DescService[];
    hooks?: Record<string, StubHook>;
    tls?: { cert: string; key: string; ca: string };
  } = {},
): Promise<StubBackend> {
  const services = options.services ?? allServices;
  const calls: StubCall[] = [];
  const running = await startService({
    name,
    host: "127.0.0.1",
    port: 0,
    routes: stubRoutes(services, name, calls, options.hooks ?? {}),
    files: services.map((s) => s.file),
    interceptors: [createAccessInterceptor({ verifier: issuer.verifier() })],
    logger: createLogger({ service: name, level: "silent" }),
    metrics: new Registry(),
    shutdownGraceMs: 200,
    healthIntervalMs: 60_000,
    ...(options.tls ? { tls: options.tls } : {}),
  });
  const scheme = options.tls ? "https" : "http";
  return { name, url: `${scheme}://127.0.0.1:${running.port}`, calls, running, close: () => running.close() };
}

/** A TCP proxy in front of a backend, so a test can kill the "instance" abruptly. */
export interface KillableProxy {
  readonly url: string;
  /** Drops every connection at once and refuses new ones, like a crashed process. */
  kill(): Promise<void>;
}

/** Starts a TCP proxy on 127.0.0.1:0 forwarding to target (http://host:port). */
export async function startKillableProxy(target: string): Promise<KillableProxy> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  const server: Server = createServer({ noDelay: true }, (client) => {
    const upstream = tcpConnect({ port: Number(port), host: hostname, noDelay: true });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.once("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async kill() {
      if (!server.listening) return;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.resetAndDestroy();
      await closed;
    },
  };
}

/** Starts a gateway on 127.0.0.1 (ports 0) in front of the given upstream URLs, trusting issuer. */
export async function startTestGateway(
  issuer: TestIssuer,
  upstreams: { auth: string[]; analytics: string[]; billing: string[]; core: string[] },
  env: Record<string, string> = {},
  options: { now?: () => number; tls?: { cert: string; key: string; ca: string } } = {},
): Promise<Gateway & { readonly baseUrl: string; readonly config: GatewayConfig }> {
  const config = loadGatewayConfig({
    HOST: "127.0.0.1",
    GATEWAY_PORT: "0",
    GATEWAY_ADMIN_PORT: "0",
    AUTH_ADDRS: upstreams.auth.join(","),
    ANALYTICS_ADDRS: upstreams.analytics.join(","),
    BILLING_ADDRS: upstreams.billing.join(","),
    CORE_ADDRS: upstreams.core.join(","),
    JWKS_URL: await issuer.serve(),
    JWT_ISSUER: issuer.issuer,
    JWT_AUDIENCE: issuer.audience,
    REVOCATIONS: "false",
    SHUTDOWN_GRACE_MS: "500",
    HEALTH_CHECK_INTERVAL: "0",
    ...env,
  });
  const gateway = await startGateway({
    config,
    logger: createLogger({ service: "gateway", level: (process.env.TEST_LOG_LEVEL as "info") ?? "silent" }),
    ...options,
  });
  return Object.assign(gateway, { baseUrl: `http://127.0.0.1:${gateway.port}`, config });
}

/** The same URL list for each upstream (one stub serving all four services). */
export function everywhere(...urls: string[]) {
  return { auth: urls, analytics: urls, billing: urls, core: urls };
}
