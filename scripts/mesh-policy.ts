// Istio policy derived from the call graph: who may call what (AuthorizationPolicy), how clients
// reach each service (DestinationRule, VirtualService), and the ingress (Gateway, RequestAuthentication).
// A checker compares AuthorizationPolicies against the call graph, so a hand edit cannot drift.
import { DestinationRule, Gateway, VirtualService } from "@kubernetes-models/istio/networking.istio.io/v1";
import {
  AuthorizationPolicy,
  PeerAuthentication,
  RequestAuthentication,
} from "@kubernetes-models/istio/security.istio.io/v1";
import { gatewayService, type ServiceNode } from "./call-graph.ts";

/** The Kubernetes namespace the mesh runs in. */
export const namespace = "trellis";
/** The mesh's trust domain (Istio's default). */
export const trustDomain = "cluster.local";
/** The service account of Istio's default ingress gateway (istio-system, default profile). */
export const ingressPrincipal = `${trustDomain}/ns/istio-system/sa/istio-ingressgateway-service-account`;
/** Where istiod fetches the JWKS for RequestAuthentication: the gateway's public endpoint. */
export const jwksPath = "/.well-known/jwks.json";
/** Issuer and audience of auth's access tokens (the kit's JWT_ISSUER/JWT_AUDIENCE defaults). */
export const jwtIssuer = "trellis-auth";
export const jwtAudience = "trellis";

/** The Istio principal of a service account of the trellis namespace. */
export function principalOf(serviceAccount: string): string {
  return `${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

/** The in-cluster DNS name of a service. */
export function hostOf(service: string): string {
  return `${service}.${namespace}.svc.cluster.local`;
}

/** The gateway's JWKS URL inside the cluster. */
export const jwksUrl = `http://${hostOf(gatewayService.name)}:${gatewayService.port}${jwksPath}`;

/** A plain object for YAML (the models' JSON form, without undefined fields). */
export type Manifest = Record<string, unknown> & { apiVersion: string; kind: string };

/** A model as a plain object for YAML (its JSON form, without undefined fields). */
export function plain(model: object): Manifest {
  return JSON.parse(JSON.stringify(model)) as Manifest;
}

function labels(app: string) {
  return { "app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "trellis" };
}

/** Namespace-wide STRICT mTLS and the deny-all policy every ALLOW policy punches holes into. */
export function meshDefaults(): Manifest[] {
  return [
    plain(
      new PeerAuthentication({
        metadata: { name: "default", namespace },
        spec: { mtls: { mode: "STRICT" } },
      }),
    ),
    // An ALLOW-nothing policy: with no rules it matches no request, so anything not allowed by a
    // per-service policy below is denied.
    plain(new AuthorizationPolicy({ metadata: { name: "deny-all", namespace }, spec: {} })),
  ];
}

/** One ALLOW policy for a service: one rule per caller, exactly the paths the call graph gives it. */
export function authorizationPolicy(node: ServiceNode): Manifest {
  return plain(
    new AuthorizationPolicy({
      metadata: { name: node.name, namespace, labels: labels(node.name) },
      spec: {
        selector: { matchLabels: { app: node.name } },
        action: "ALLOW",
        rules: Object.entries(node.callers).map(([caller, paths]) => ({
          from: [{ source: { principals: [principalOf(caller)] } }],
          to: [{ operation: { ports: [String(node.port)], paths: [...paths] } }],
        })),
      },
    }),
  );
}

/** The gateway's ALLOW policy: everything from the ingress gateway, and the public JWKS for istiod. */
export function gatewayAuthorizationPolicy(): Manifest {
  const port = String(gatewayService.port);
  return plain(
    new AuthorizationPolicy({
      metadata: { name: gatewayService.name, namespace, labels: labels(gatewayService.name) },
      spec: {
        selector: { matchLabels: { app: gatewayService.name } },
        action: "ALLOW",
        rules: [
          { from: [{ source: { principals: [ingressPrincipal] } }], to: [{ operation: { ports: [port] } }] },
          // istiod fetches the JWKS in plaintext (it has no sidecar), and services verify tokens
          // against it: public keys, readable by anyone in the cluster, nothing else.
          { to: [{ operation: { ports: [port], methods: ["GET"], paths: [jwksPath] } }] },
        ],
      },
    }),
  );
}

/** ISTIO_MUTUAL, least-request balancing, a connection pool and outlier ejection for a service. */
export function destinationRule(service: string): Manifest {
  return plain(
    new DestinationRule({
      metadata: { name: service, namespace, labels: labels(service) },
      spec: {
        host: hostOf(service),
        trafficPolicy: {
          tls: { mode: "ISTIO_MUTUAL" },
          loadBalancer: { simple: "LEAST_REQUEST" },
          connectionPool: {
            tcp: { maxConnections: 100, connectTimeout: "3s" },
            http: { http2MaxRequests: 1000, http1MaxPendingRequests: 256, idleTimeout: "300s" },
          },
          outlierDetection: {
            consecutive5xxErrors: 5,
            consecutiveGatewayErrors: 3,
            interval: "10s",
            baseEjectionTime: "30s",
            maxEjectionPercent: 50,
          },
        },
      },
    }),
  );
}

/** Route timeout of unary calls; the kit's clients send shorter deadlines of their own. */
export const unaryTimeout = "10s";

/**
 * Routes to a service: streaming methods without timeout or retries, idempotent unary methods
 * (NO_SIDE_EFFECTS / IDEMPOTENT) with retries, everything else with retries off (Istio would
 * otherwise retry twice by default). Matches are exact gRPC paths, so a method never borrows
 * another's policy by sharing a prefix.
 */
export function virtualService(node: ServiceNode): Manifest {
  const destination = { host: hostOf(node.name), port: { number: node.port } };
  const exact = (paths: string[]) => paths.map((path) => ({ uri: { exact: path } }));
  const streaming = node.methods.filter((m) => m.streaming).map((m) => m.path);
  const retryable = node.methods
    .filter((m) => !m.streaming && m.idempotency !== "unknown")
    .map((m) => m.path);
  const http = [];
  if (streaming.length > 0) {
    http.push({
      name: "streaming",
      match: exact(streaming),
      route: [{ destination }],
      timeout: "0s",
      retries: { attempts: 0 },
    });
  }
  if (retryable.length > 0) {
    http.push({
      name: "idempotent",
      match: exact(retryable),
      route: [{ destination }],
      timeout: unaryTimeout,
      retries: {
        attempts: 2,
        perTryTimeout: "4s",
        retryOn: "unavailable,connect-failure,refused-stream,reset",
      },
    });
  }
  http.push({ name: "default", route: [{ destination }], timeout: unaryTimeout, retries: { attempts: 0 } });
  return plain(
    new VirtualService({
      metadata: { name: node.name, namespace, labels: labels(node.name) },
      spec: { hosts: [hostOf(node.name)], http },
    }),
  );
}

/** The ingress: a Gateway and a VirtualService that expose the trellis gateway and nothing else. */
export function ingress(): Manifest[] {
  const destination = { host: hostOf(gatewayService.name), port: { number: gatewayService.port } };
  return [
    plain(
      new Gateway({
        metadata: { name: "trellis-ingress", namespace, labels: labels("trellis-ingress") },
        spec: {
          selector: { istio: "ingressgateway" },
          servers: [
            { port: { number: 80, name: "http", protocol: "HTTP" }, hosts: ["*"] },
            {
              port: { number: 443, name: "https", protocol: "HTTPS" },
              hosts: ["*"],
              tls: { mode: "SIMPLE", credentialName: "trellis-ingress-tls" },
            },
          ],
        },
      }),
    ),
    plain(
      new VirtualService({
        metadata: { name: "trellis-ingress", namespace, labels: labels("trellis-ingress") },
        spec: {
          hosts: ["*"],
          gateways: ["trellis-ingress"],
          // No route timeout (server streams pass through; the gateway enforces deadlines) and no
          // retries here: the gateway retries idempotent calls itself.
          http: [{ name: "gateway", route: [{ destination }], timeout: "0s", retries: { attempts: 0 } }],
        },
      }),
    ),
    plain(
      new RequestAuthentication({
        metadata: { name: gatewayService.name, namespace, labels: labels(gatewayService.name) },
        spec: {
          selector: { matchLabels: { app: gatewayService.name } },
          jwtRules: [
            { issuer: jwtIssuer, audiences: [jwtAudience], jwksUri: jwksUrl, forwardOriginalToken: true },
          ],
        },
      }),
    ),
    // istiod has no sidecar: its JWKS fetch is plaintext, so the gateway's port accepts it; the
    // gateway's AuthorizationPolicy lets plaintext reach nothing but the JWKS path.
    plain(
      new PeerAuthentication({
        metadata: { name: gatewayService.name, namespace, labels: labels(gatewayService.name) },
        spec: {
          selector: { matchLabels: { app: gatewayService.name } },
          mtls: { mode: "STRICT" },
          portLevelMtls: { [gatewayService.port]: { mode: "PERMISSIVE" } },
        },
      }),
    ),
  ];
}
