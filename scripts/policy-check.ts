// Checks AuthorizationPolicies against the call graph, so a hand edit of istio/ (or a generator bug)
// that allows more, or less, than the contracts say is caught.
import { type CallGraph, gatewayService } from "./call-graph.ts";
import { gatewayAuthorizationPolicy, type Manifest, namespace, principalOf } from "./mesh-policy.ts";

interface PolicyRule {
  from?: { source?: Record<string, unknown> }[];
  to?: { operation?: Record<string, unknown> }[];
  when?: unknown[];
}

/**
 * Checks the AuthorizationPolicies among manifests against the call graph: deny-all exists; per
 * service exactly one ALLOW policy whose (principal, path) pairs equal the graph's, on the service's
 * port, with nothing looser (no rule without principals or paths, no wildcards, no conditions);
 * the gateway's policy is the generated one. Returns the problems found (empty when all match).
 */
export function checkAuthorizationPolicies(manifests: readonly Manifest[], graph: CallGraph): string[] {
  const problems: string[] = [];
  const policies = manifests.filter((m) => m.kind === "AuthorizationPolicy") as unknown as {
    metadata: { name: string; namespace?: string };
    spec?: { selector?: { matchLabels?: Record<string, string> }; action?: string; rules?: PolicyRule[] };
  }[];
  const denyAll = policies.find((p) => p.metadata.name === "deny-all");
  if (!denyAll || JSON.stringify(denyAll.spec ?? {}) !== "{}")
    problems.push("deny-all policy missing or not empty");
  const byApp = new Map<string, typeof policies>();
  for (const p of policies) {
    if (p === denyAll) continue;
    if (p.metadata.namespace !== namespace)
      problems.push(`${p.metadata.name}: not in namespace ${namespace}`);
    if ((p.spec?.action ?? "ALLOW") !== "ALLOW")
      problems.push(`${p.metadata.name}: action ${p.spec?.action}`);
    const app = p.spec?.selector?.matchLabels?.app;
    if (!app) {
      problems.push(`${p.metadata.name}: no workload selector (would apply to the whole namespace)`);
      continue;
    }
    byApp.set(app, [...(byApp.get(app) ?? []), p]);
  }
  const expectedApps = new Set([...graph.services.map((s) => s.name), gatewayService.name]);
  for (const app of byApp.keys())
    if (!expectedApps.has(app)) problems.push(`policy for unknown workload ${app}`);

  const gatewayPolicies = byApp.get(gatewayService.name) ?? [];
  if (
    gatewayPolicies.length !== 1 ||
    JSON.stringify(gatewayPolicies[0]) !== JSON.stringify(gatewayAuthorizationPolicy())
  ) {
    problems.push("gateway: policy differs from the generated one");
  }
  for (const node of graph.services) {
    const found = byApp.get(node.name) ?? [];
    if (found.length !== 1) {
      problems.push(`${node.name}: expected exactly one ALLOW policy, found ${found.length}`);
      continue;
    }
    const actual = new Set<string>();
    for (const [i, rule] of (found[0]?.spec?.rules ?? []).entries()) {
      const where = `${node.name} rule ${i}`;
      if (rule.when?.length) problems.push(`${where}: has conditions`);
      const sources = (rule.from ?? []).map((f) => f.source ?? {});
      const operations = (rule.to ?? []).map((t) => t.operation ?? {});
      const principals = sources.flatMap((s) =>
        Array.isArray(s.principals) ? (s.principals as string[]) : [],
      );
      const paths = operations.flatMap((o) => (Array.isArray(o.paths) ? (o.paths as string[]) : []));
      if (sources.length === 0 || sources.some((s) => Object.keys(s).join() !== "principals")) {
        problems.push(`${where}: every source must name principals and nothing else`);
      }
      if (
        operations.length === 0 ||
        operations.some((o) => !Array.isArray(o.paths) || o.paths.length === 0)
      ) {
        problems.push(`${where}: every operation must list paths`);
      }
      for (const o of operations) {
        const extra = Object.keys(o).filter((k) => k !== "paths" && k !== "ports");
        if (extra.length > 0) problems.push(`${where}: unexpected operation fields ${extra.join(", ")}`);
        if (JSON.stringify(o.ports) !== JSON.stringify([String(node.port)])) {
          problems.push(`${where}: ports must be exactly ["${node.port}"]`);
        }
      }
      for (const principal of principals) for (const path of paths) actual.add(`${principal} ${path}`);
    }
    const expected = new Set(
      Object.entries(node.callers).flatMap(([caller, paths]) =>
        paths.map((p) => `${principalOf(caller)} ${p}`),
      ),
    );
    for (const pair of actual)
      if (!expected.has(pair)) problems.push(`${node.name}: allows ${pair} (not in the call graph)`);
    for (const pair of expected) if (!actual.has(pair)) problems.push(`${node.name}: misses ${pair}`);
  }
  return problems;
}
