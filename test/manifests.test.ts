// istio/, compose.yaml and the Dockerfiles, checked without a cluster: they are what the generator
// makes from the contracts' call graph, they validate against the Kubernetes and Istio schemas, every
// workload has identity, probes, limits and policy, and compose matches the code's ports and variables.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import * as istioNetworking from "@kubernetes-models/istio/networking.istio.io/v1";
import * as istioSecurity from "@kubernetes-models/istio/security.istio.io/v1";
import { kitConfigSchema } from "@trellis/kit/config.js";
import * as apps from "kubernetes-models/apps/v1";
import * as autoscaling from "kubernetes-models/autoscaling/v2";
import * as policy from "kubernetes-models/policy/v1";
import * as core from "kubernetes-models/v1";
import { parse, parseAllDocuments } from "yaml";
import { buildCallGraph, forbiddenDials, gatewayService } from "../scripts/call-graph.ts";
import { renderAll, strayManifests } from "../scripts/manifests.ts";
import type { Manifest } from "../scripts/mesh-policy.ts";
import { principalOf } from "../scripts/mesh-policy.ts";
import { checkAuthorizationPolicies } from "../scripts/policy-check.ts";
import { dockerfile, workspaceDir } from "../scripts/service-templates.ts";
import { workloads } from "../scripts/workloads.ts";

const root = new URL("..", import.meta.url).pathname;
const graph = buildCallGraph();
const all = workloads(graph);
const read = (path: string) => readFileSync(join(root, path), "utf8");

// biome-ignore lint/suspicious/noExplicitAny: parsed YAML, walked freely by the assertions.
type Json = any;
type Doc = Manifest & { metadata: { name: string; namespace?: string }; spec?: Json };

const models: Record<string, new (data: Json) => { validate(): void }> = {
  "v1/Namespace": core.Namespace,
  "v1/ServiceAccount": core.ServiceAccount,
  "v1/Service": core.Service,
  "v1/ConfigMap": core.ConfigMap,
  "apps/v1/Deployment": apps.Deployment,
  "autoscaling/v2/HorizontalPodAutoscaler": autoscaling.HorizontalPodAutoscaler,
  "policy/v1/PodDisruptionBudget": policy.PodDisruptionBudget,
  "security.istio.io/v1/AuthorizationPolicy": istioSecurity.AuthorizationPolicy,
  "security.istio.io/v1/PeerAuthentication": istioSecurity.PeerAuthentication,
  "security.istio.io/v1/RequestAuthentication": istioSecurity.RequestAuthentication,
  "networking.istio.io/v1/DestinationRule": istioNetworking.DestinationRule,
  "networking.istio.io/v1/VirtualService": istioNetworking.VirtualService,
  "networking.istio.io/v1/Gateway": istioNetworking.Gateway,
};

function committedManifests(): Doc[] {
  const docs: Doc[] = [];
  for (const file of readdirSync(join(root, "istio")).filter((f) => f.endsWith(".yaml"))) {
    for (const doc of parseAllDocuments(read(`istio/${file}`))) {
      assert.deepEqual(doc.errors, [], `istio/${file} parses`);
      if (doc.contents !== null) docs.push(doc.toJS() as Doc);
    }
  }
  return docs;
}
const docs = committedManifests();
const find = (kind: string, name: string) => docs.find((d) => d.kind === kind && d.metadata.name === name);

/** Uppercase words in a workspace's source: the environment variables its code can read. */
function variablesRead(name: string): Set<string> {
  const dir = join(root, workspaceDir(name), "src");
  const words = new Set<string>(name === gatewayService.name ? [] : Object.keys(kitConfigSchema(1)));
  for (const file of existsSync(dir) ? readdirSync(dir) : []) {
    if (!file.endsWith(".ts")) continue;
    for (const m of readFileSync(join(dir, file), "utf8").matchAll(/\b[A-Z][A-Z0-9_]{2,}\b/g))
      words.add(m[0]);
  }
  return words;
}

/** The port a workspace's code listens on by default (its ServiceDefinition, or GATEWAY_PORT). */
function sourcePort(name: string): number | undefined {
  const dir = join(root, workspaceDir(name), "src");
  for (const file of existsSync(dir) ? readdirSync(dir) : []) {
    const text = readFileSync(join(dir, file), "utf8");
    const m =
      /defaultPort:\s*(\d+)/.exec(text) ?? /GATEWAY_PORT:\s*env\.port\(\{\s*default:\s*(\d+)/.exec(text);
    if (m) return Number(m[1]);
  }
  return undefined;
}

describe("call graph", () => {
  const billing = graph.services.find((s) => s.name === "billing");
  test("billing Charge and Refund: core only; public and user methods: the gateway only", () => {
    assert.deepEqual(billing?.methods.find((m) => m.path.endsWith("/Charge"))?.callers, ["core"]);
    assert.deepEqual(billing?.methods.find((m) => m.path.endsWith("/Refund"))?.callers, ["core"]);
    for (const s of graph.services) {
      for (const m of s.methods) {
        if (m.audience === "internal")
          assert.ok(!m.callers.includes("gateway"), `${m.path} not via the gateway`);
        else assert.deepEqual(m.callers, ["gateway"], m.path);
      }
      assert.ok(
        s.callers.gateway?.includes("/grpc.health.v1.Health/Check"),
        `${s.name}: gateway checks health`,
      );
    }
  });
  test("every service dials only what the graph allows", () => {
    assert.deepEqual(forbiddenDials(graph), []);
  });
});

describe("istio/ and compose", () => {
  test("the committed files are exactly what the generator makes", () => {
    const rendered = renderAll(graph);
    for (const [path, text] of rendered)
      assert.equal(read(path), text, `${path} is stale: run npm run manifests`);
    assert.deepEqual(strayManifests(root, rendered), []);
  });

  test("every manifest validates against its Kubernetes or Istio schema", () => {
    assert.ok(docs.length > 20);
    for (const doc of docs) {
      const Model = models[`${doc.apiVersion}/${doc.kind}`];
      assert.ok(Model, `no schema for ${doc.apiVersion} ${doc.kind} (not a current API version?)`);
      assert.doesNotThrow(() => new Model(doc).validate(), `${doc.kind} ${doc.metadata.name}`);
      if (doc.kind !== "Namespace")
        assert.equal(doc.metadata.namespace, "trellis", `${doc.kind} ${doc.metadata.name}`);
    }
  });

  test("the schemas do reject a broken manifest", () => {
    const broken = structuredClone(find("Deployment", "billing")) as Doc;
    broken.spec.template.spec.containers[0].ports[0].containerPort = "grpc";
    assert.throws(() => new apps.Deployment(broken as never).validate());
  });

  test("namespace: sidecar injection, STRICT mTLS, deny-all", () => {
    const ns = find("Namespace", "trellis") as Doc & { metadata: { labels: Record<string, string> } };
    assert.equal(ns.metadata.labels["istio-injection"], "enabled");
    const strict = docs.filter((d) => d.kind === "PeerAuthentication" && !d.spec?.selector);
    assert.deepEqual(
      strict.map((d) => d.spec.mtls.mode),
      ["STRICT"],
    );
    assert.deepEqual(find("AuthorizationPolicy", "deny-all")?.spec, {});
  });

  for (const w of all) {
    test(`${w.name}: identity, hardened Deployment with probes and limits, Service, HPA, PDB, policy`, () => {
      const admin = w.port + 1000;
      assert.ok(find("ServiceAccount", w.name));
      const deployment = find("Deployment", w.name) as Doc;
      const pod = deployment.spec.template.spec;
      const [container] = pod.containers;
      assert.equal(pod.serviceAccountName, w.name);
      assert.ok(deployment.spec.replicas >= 2);
      assert.equal(pod.securityContext.runAsNonRoot, true);
      assert.equal(pod.securityContext.seccompProfile.type, "RuntimeDefault");
      assert.ok(pod.topologySpreadConstraints.length > 0);
      assert.equal(container.securityContext.readOnlyRootFilesystem, true);
      assert.equal(container.securityContext.allowPrivilegeEscalation, false);
      assert.deepEqual(container.securityContext.capabilities.drop, ["ALL"]);
      assert.ok(container.resources.requests.cpu && container.resources.requests.memory);
      assert.ok(container.resources.limits.cpu && container.resources.limits.memory);
      const adminPort = container.ports.find((p: Json) => p.name === "http-admin");
      assert.equal(adminPort.containerPort, admin);
      assert.equal(container.ports.find((p: Json) => p.name === "grpc").containerPort, w.port);
      assert.deepEqual(container.readinessProbe.httpGet, { path: "/readyz", port: "http-admin" });
      assert.deepEqual(container.livenessProbe.httpGet, { path: "/healthz", port: "http-admin" });
      const read = variablesRead(w.name);
      for (const e of container.env) assert.ok(read.has(e.name), `${w.name} does not read ${e.name}`);
      for (const ref of container.envFrom) {
        const config = find("ConfigMap", ref.configMapRef.name) as Doc & { data: Record<string, string> };
        for (const key of Object.keys(config.data))
          assert.ok(read.has(key), `${w.name} does not read ${key}`);
      }
      const service = find("Service", w.name) as Doc;
      assert.deepEqual(
        service.spec.ports.map((p: Json) => [p.name, p.port]),
        [
          [`grpc-${w.name}`, w.port],
          ["http-admin", admin],
        ],
      );
      assert.equal(find("HorizontalPodAutoscaler", w.name)?.spec.scaleTargetRef.name, w.name);
      assert.deepEqual(find("PodDisruptionBudget", w.name)?.spec.selector, { matchLabels: { app: w.name } });
      assert.equal(find("AuthorizationPolicy", w.name)?.spec.selector.matchLabels.app, w.name);
      assert.equal(find("DestinationRule", w.name)?.spec.trafficPolicy.tls.mode, "ISTIO_MUTUAL");
    });
  }

  test("AuthorizationPolicies match the call graph exactly", () => {
    assert.deepEqual(checkAuthorizationPolicies(docs, graph), []);
  });

  const mutations: [string, (d: Doc[]) => void][] = [
    [
      "a path added",
      (d) => billingRules(d)[0].to[0].operation.paths.push("/trellis.billing.v1.BillingService/ListPlans"),
    ],
    ["a path removed", (d) => billingRules(d)[0].to[0].operation.paths.pop()],
    ["another principal", (d) => (billingRules(d)[0].from[0].source.principals = [principalOf("gateway")])],
    [
      "a wildcard path",
      (d) => (billingRules(d)[0].to[0].operation.paths = ["/trellis.billing.v1.BillingService/*"]),
    ],
    ["a rule without source", (d) => billingRules(d).push({ to: [{ operation: { paths: ["/x"] } }] })],
    ["a rule without paths", (d) => delete billingRules(d)[0].to],
    ["ports dropped", (d) => delete billingRules(d)[0].to[0].operation.ports],
    ["a namespace also allowed", (d) => (billingRules(d)[0].from[0].source.namespaces = ["trellis"])],
    ["the policy deleted", (d) => d.splice(d.findIndex(isBillingPolicy), 1)],
    [
      "deny-all given a rule",
      (d) => ((d.find((x) => x.metadata.name === "deny-all") as Doc).spec = { rules: [{}] }),
    ],
    [
      "the gateway opened",
      (d) =>
        ((
          d.find((x) => x.kind === "AuthorizationPolicy" && x.metadata.name === "gateway") as Doc
        ).spec.rules[0].from = undefined),
    ],
  ];
  for (const [name, mutate] of mutations) {
    test(`the policy check fails when ${name}`, () => {
      const copy = structuredClone(docs);
      mutate(copy);
      assert.notDeepEqual(checkAuthorizationPolicies(copy, graph), []);
    });
  }

  test("retries only on idempotent, unary methods; streams have no route timeout", () => {
    for (const node of graph.services) {
      const routes = (find("VirtualService", node.name) as Doc).spec.http as Json[];
      assert.equal(routes.at(-1).match, undefined, "a catch-all route comes last");
      assert.equal(routes.at(-1).retries.attempts, 0, "retries are off by default");
      for (const route of routes.filter((r) => r.retries.attempts > 0)) {
        for (const m of route.match) {
          const method = node.methods.find((x) => x.path === m.uri.exact);
          assert.ok(
            method && method.idempotency !== "unknown" && !method.streaming,
            `${m.uri.exact} is retried`,
          );
        }
      }
      for (const m of node.methods.filter((x) => x.streaming)) {
        const route = routes.find((r) => r.match?.some((x: Json) => x.uri.exact === m.path));
        assert.equal(route?.timeout, "0s", `${m.path} streams without a route timeout`);
      }
      const nonIdempotent = node.methods.filter((m) => m.idempotency === "unknown");
      for (const m of nonIdempotent)
        assert.ok(!routes.some((r) => r.match?.some((x: Json) => x.uri.exact === m.path)));
    }
  });

  test("the ingress exposes the gateway alone, which checks auth's tokens", () => {
    const virtualServices = docs.filter((d) => d.kind === "VirtualService" && d.spec.gateways?.length);
    const hosts = virtualServices.flatMap((v) =>
      v.spec.http.flatMap((r: Json) => r.route.map((x: Json) => x.destination.host)),
    );
    assert.deepEqual([...new Set(hosts)], ["gateway.trellis.svc.cluster.local"]);
    const requestAuth = docs.filter((d) => d.kind === "RequestAuthentication");
    assert.equal(requestAuth.length, 1);
    assert.equal(requestAuth[0]?.spec.selector.matchLabels.app, "gateway");
    assert.match(
      requestAuth[0]?.spec.jwtRules[0].jwksUri,
      /^http:\/\/gateway\.trellis\.svc\.cluster\.local:8080\/\.well-known\/jwks\.json$/,
    );
  });
});

function isBillingPolicy(d: Doc): boolean {
  return d.kind === "AuthorizationPolicy" && d.metadata.name === "billing";
}
function billingRules(d: Doc[]): Json[] {
  return (d.find(isBillingPolicy) as Doc).spec.rules;
}

describe("compose.yaml and the Dockerfiles", () => {
  const compose = parse(read("compose.yaml")) as {
    services: Record<string, Json>;
    volumes: Record<string, unknown>;
  };

  test("every workload's source listens on the registry's port", () => {
    for (const w of all) assert.equal(sourcePort(w.name), w.port, `${workspaceDir(w.name)}/src default port`);
  });

  for (const w of all) {
    test(`${w.name}: image from its Dockerfile, ports, env the code reads, healthcheck`, () => {
      const service = compose.services[w.name];
      const dockerfilePath = `${workspaceDir(w.name)}/Dockerfile`;
      assert.equal(service.build.dockerfile, dockerfilePath);
      assert.equal(
        read(dockerfilePath),
        dockerfile(w.name, w.port),
        `${dockerfilePath} matches the template`,
      );
      assert.ok(existsSync(join(root, workspaceDir(w.name), "src/main.ts")), "the Dockerfile's CMD exists");
      assert.equal(service.environment[w.portVariable], String(w.port));
      assert.equal(service.environment[w.adminPortVariable], String(w.port + 1000));
      assert.ok(
        service.ports.some((p: string) => p.endsWith(`:${w.port}:${w.port}`) || p === `${w.port}:${w.port}`),
      );
      assert.ok(service.healthcheck.test.join(" ").includes(`127.0.0.1:${w.port + 1000}/readyz`));
      const read_ = variablesRead(w.name);
      for (const name of Object.keys(service.environment))
        assert.ok(read_.has(name), `${w.name} does not read ${name}`);
      assert.equal(service.read_only, true);
      for (const u of w.upstreams) assert.match(service.environment[w.upstreamVariable(u)], /^https:\/\//);
    });
  }

  test("every dependency exists with a condition; every build names an existing Dockerfile", () => {
    for (const [name, service] of Object.entries(compose.services)) {
      for (const [dep, cond] of Object.entries(service.depends_on ?? {}) as [string, Json][]) {
        assert.ok(compose.services[dep], `${name} depends on unknown ${dep}`);
        assert.match(cond.condition, /^service_(healthy|started|completed_successfully)$/);
        if (cond.condition === "service_healthy")
          assert.ok(compose.services[dep].healthcheck, `${dep} has a healthcheck`);
      }
      if (service.build)
        assert.ok(existsSync(join(root, service.build.dockerfile)), service.build.dockerfile);
    }
    assert.doesNotMatch(
      read("compose.yaml").replace(/\$\$/g, ""),
      /\$/,
      "a lone $ would be interpolated by compose",
    );
  });

  test("Dockerfiles: multi-stage, non-root, healthcheck, tsx available at run time", () => {
    for (const w of all) {
      const text = read(`${workspaceDir(w.name)}/Dockerfile`);
      assert.ok((text.match(/^FROM node:20-bookworm-slim/gm) ?? []).length >= 2);
      assert.match(text, /^USER node$/m);
      assert.match(text, /^HEALTHCHECK /m);
      const pkg = JSON.parse(read(`${workspaceDir(w.name)}/package.json`));
      const kit = JSON.parse(read("packages/kit/package.json"));
      assert.ok(
        pkg.dependencies?.tsx || kit.dependencies?.tsx,
        `tsx must be a runtime dependency of ${w.name} or the kit`,
      );
    }
  });
});
