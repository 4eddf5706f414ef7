// The Kubernetes workloads of istio/: per service and for the gateway a ServiceAccount, a hardened
// Deployment, a Service with named ports, a HorizontalPodAutoscaler and a PodDisruptionBudget, with
// the environment variable names each workload's code reads.
import { Deployment } from "kubernetes-models/apps/v1";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import {
  ConfigMap,
  type IEnvVar,
  type ITopologySpreadConstraint,
  Service,
  ServiceAccount,
} from "kubernetes-models/v1";
import {
  buildCallGraph,
  type CallGraph,
  calleesOf,
  gatewayService,
  meshServices,
  type Store,
} from "./call-graph.ts";
import { hostOf, jwksUrl, type Manifest, namespace, plain } from "./mesh-policy.ts";

/** The tag of the images compose builds and the Deployments run. */
export const imageTag = "0.1.0";

/** The image of a service. */
export function imageOf(service: string): string {
  return `trellis/${service}:${imageTag}`;
}

/** A workload to deploy: a mesh service or the gateway, with the variable names its code reads. */
export interface Workload {
  readonly name: string;
  readonly port: number;
  readonly stores: readonly Store[];
  /** Services it calls. */
  readonly upstreams: readonly string[];
  readonly portVariable: string;
  readonly adminPortVariable: string;
  /** The variable holding an upstream's address: BILLING_URL for services, BILLING_ADDRS for the gateway. */
  upstreamVariable(service: string): string;
  /** Whether it reads TRUST_FORWARDED_IDENTITY and JWKS_URL (the kit's service config). */
  readonly kitService: boolean;
}

const envName = (service: string) => service.toUpperCase().replace(/-/g, "_");

/** The workloads in deployment order: the mesh services, then the gateway (which calls all of them). */
export function workloads(graph: CallGraph = buildCallGraph()): Workload[] {
  const services: Workload[] = meshServices.map((s) => ({
    name: s.name,
    port: s.port,
    stores: s.stores,
    upstreams: [...s.dials],
    portVariable: "PORT",
    adminPortVariable: "ADMIN_PORT",
    upstreamVariable: (u) => `${envName(u)}_URL`,
    kitService: true,
  }));
  return [
    ...services,
    {
      ...gatewayService,
      upstreams: calleesOf(graph, gatewayService.name),
      portVariable: "GATEWAY_PORT",
      adminPortVariable: "GATEWAY_ADMIN_PORT",
      upstreamVariable: (u) => `${envName(u)}_ADDRS`,
      kitService: false,
    },
  ];
}

const secretVariables: Record<Store, { variable: string; secret: (svc: string) => string } | undefined> = {
  postgres: { variable: "DATABASE_URL", secret: (svc) => `${svc}-database` },
  clickhouse: { variable: "CLICKHOUSE_URL", secret: (svc) => `${svc}-clickhouse` },
  nats: undefined,
};

// Service-specific secrets beyond the stores (optional for the code, expected in production).
const extraSecrets: Record<string, readonly { variable: string; secret: string; key: string }[]> = {
  auth: [{ variable: "AUTH_ENCRYPTION_KEY", secret: "auth-secrets", key: "encryption-key" }],
};

function environment(w: Workload): IEnvVar[] {
  const env: IEnvVar[] = [
    { name: w.portVariable, value: String(w.port) },
    { name: w.adminPortVariable, value: String(w.port + 1000) },
  ];
  if (w.kitService) {
    // Behind a sidecar the caller's identity arrives in x-forwarded-client-cert, set by Envoy.
    env.push({ name: "TRUST_FORWARDED_IDENTITY", value: "true" });
    // The gateway serves auth's keys; it reads them itself from auth (GetJwks), so it has no JWKS_URL.
    env.push({ name: "JWKS_URL", value: jwksUrl });
  } else {
    // The ingress gateway sets X-Forwarded-For: rate limits per client address need it.
    env.push({ name: "TRUST_PROXY", value: "true" });
  }
  for (const store of w.stores) {
    const s = secretVariables[store];
    if (s)
      env.push({ name: s.variable, valueFrom: { secretKeyRef: { name: s.secret(w.name), key: "url" } } });
  }
  for (const e of extraSecrets[w.name] ?? []) {
    env.push({ name: e.variable, valueFrom: { secretKeyRef: { name: e.secret, key: e.key } } });
  }
  // Plain HTTP/2: the sidecars upgrade every hop to mutual TLS.
  for (const u of w.upstreams) {
    const port = meshServices.find((s) => s.name === u)?.port;
    env.push({ name: w.upstreamVariable(u), value: `http://${hostOf(u)}:${port}` });
  }
  return env;
}

/** The ConfigMap every workload reads with envFrom: shared endpoints and settings. */
export function sharedConfig(): Manifest {
  return plain(
    new ConfigMap({
      metadata: { name: "trellis-config", namespace },
      data: {
        LOG_LEVEL: "info",
        NATS_URL: "nats://nats.nats.svc.cluster.local:4222",
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel-collector.observability.svc.cluster.local:4318",
      },
    }),
  );
}

/** ServiceAccount, Deployment, Service, HorizontalPodAutoscaler and PodDisruptionBudget of a workload. */
export function workloadManifests(w: Workload): Manifest[] {
  const adminPort = w.port + 1000;
  const labels = { app: w.name, "app.kubernetes.io/name": w.name, "app.kubernetes.io/part-of": "trellis" };
  const selector = { matchLabels: { app: w.name } };
  const metadata = { name: w.name, namespace, labels };
  const spread = (topologyKey: string): ITopologySpreadConstraint => ({
    maxSkew: 1,
    topologyKey,
    whenUnsatisfiable: "ScheduleAnyway",
    labelSelector: selector,
  });
  const probe = (path: string) => ({ httpGet: { path, port: "http-admin" } });
  return [
    plain(new ServiceAccount({ metadata, automountServiceAccountToken: false })),
    plain(
      new Deployment({
        metadata,
        spec: {
          replicas: 2,
          revisionHistoryLimit: 5,
          selector,
          strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
          template: {
            metadata: {
              labels: { ...labels, version: "v1" },
              annotations: {
                // Istio merges these into its own scrape endpoint, so Prometheus needs no mTLS.
                "prometheus.io/scrape": "true",
                "prometheus.io/port": String(adminPort),
                "prometheus.io/path": "/metrics",
                // Stores and upstreams are dialled at start: wait for the sidecar first.
                "proxy.istio.io/config": '{"holdApplicationUntilProxyStarts": true}',
              },
            },
            spec: {
              serviceAccountName: w.name,
              automountServiceAccountToken: false,
              terminationGracePeriodSeconds: 30,
              securityContext: {
                runAsNonRoot: true,
                // The image's USER is "node"; a numeric id lets the kubelet verify runAsNonRoot.
                runAsUser: 1000,
                runAsGroup: 1000,
                fsGroup: 1000,
                seccompProfile: { type: "RuntimeDefault" },
              },
              topologySpreadConstraints: [
                spread("topology.kubernetes.io/zone"),
                spread("kubernetes.io/hostname"),
              ],
              containers: [
                {
                  name: w.name,
                  image: imageOf(w.name),
                  imagePullPolicy: "IfNotPresent",
                  ports: [
                    { name: "grpc", containerPort: w.port, protocol: "TCP" },
                    { name: "http-admin", containerPort: adminPort, protocol: "TCP" },
                  ],
                  env: environment(w),
                  envFrom: [{ configMapRef: { name: "trellis-config" } }],
                  // The sidecar rewrites these HTTP probes to its own port (15020), so they reach
                  // the admin port without mTLS and need no AuthorizationPolicy rule.
                  startupProbe: { ...probe("/healthz"), periodSeconds: 2, failureThreshold: 60 },
                  readinessProbe: {
                    ...probe("/readyz"),
                    periodSeconds: 5,
                    timeoutSeconds: 2,
                    failureThreshold: 3,
                  },
                  livenessProbe: {
                    ...probe("/healthz"),
                    periodSeconds: 10,
                    timeoutSeconds: 2,
                    failureThreshold: 3,
                  },
                  resources: {
                    requests: { cpu: "100m", memory: "128Mi" },
                    limits: { cpu: "1", memory: w.name === "auth" ? "1Gi" : "512Mi" },
                  },
                  securityContext: {
                    allowPrivilegeEscalation: false,
                    readOnlyRootFilesystem: true,
                    runAsNonRoot: true,
                    capabilities: { drop: ["ALL"] },
                  },
                  volumeMounts: [{ name: "tmp", mountPath: "/tmp" }],
                },
              ],
              volumes: [{ name: "tmp", emptyDir: { medium: "Memory", sizeLimit: "64Mi" } }],
            },
          },
        },
      }),
    ),
    plain(
      new Service({
        metadata,
        spec: {
          selector: { app: w.name },
          ports: [
            { name: `grpc-${w.name}`, port: w.port, targetPort: "grpc", appProtocol: "grpc" },
            { name: "http-admin", port: adminPort, targetPort: "http-admin", appProtocol: "http" },
          ],
        },
      }),
    ),
    plain(
      new HorizontalPodAutoscaler({
        metadata,
        spec: {
          scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: w.name },
          minReplicas: 2,
          maxReplicas: 10,
          metrics: [
            {
              type: "Resource",
              resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 70 } },
            },
          ],
        },
      }),
    ),
    plain(new PodDisruptionBudget({ metadata, spec: { maxUnavailable: 1, selector } })),
  ];
}
