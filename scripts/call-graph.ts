// The call graph of the mesh, derived from the contracts: which service account may call which
// gRPC path of which service. Internal RPCs name their callers in their
// (trellis.common.v1.access) option; public and user RPCs are reached only through the gateway,
// which also checks every service's health over gRPC. Mesh policy (scripts/manifests.ts), the
// native mTLS checks (the kit reads the same option) and compose are derived from or checked
// against this, so they cannot drift.
//
// `node --import tsx scripts/call-graph.ts` prints it as JSON.
import type { DescFile, DescMethod } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Health } from "@trellis/gen/grpc/health/v1/health_pb.js";
import { file_trellis_analytics_v1_analytics } from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { file_trellis_auth_v1_auth } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { file_trellis_billing_v1_billing } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { file_trellis_core_v1_core } from "@trellis/gen/trellis/core/v1/core_pb.js";
// new-service: imports
import { methodAccess } from "@trellis/kit/access.js";

/** A store a service needs; decides its environment in compose and Kubernetes. */
export type Store = "postgres" | "clickhouse" | "nats";

/** A service of the mesh: its service account name, gRPC port, contract and stores. */
export interface MeshService {
  readonly name: string;
  /** The service's default PORT (its admin port is this + 1000). */
  readonly port: number;
  /** The generated file declaring its gRPC service. */
  readonly file: DescFile;
  readonly stores: readonly Store[];
  /** The mesh services its code calls (each reached through <NAME>_URL); the graph must allow them. */
  readonly dials: readonly string[];
}

/** Every service behind the gateway; scripts/new-service.ts adds entries above the marker. */
export const meshServices: readonly MeshService[] = [
  { name: "auth", port: 8001, file: file_trellis_auth_v1_auth, stores: ["postgres", "nats"], dials: [] },
  {
    name: "analytics",
    port: 8002,
    file: file_trellis_analytics_v1_analytics,
    stores: ["clickhouse", "nats"],
    dials: [],
  },
  {
    name: "billing",
    port: 8003,
    file: file_trellis_billing_v1_billing,
    stores: ["postgres", "nats"],
    dials: [],
  },
  {
    name: "core",
    port: 8004,
    file: file_trellis_core_v1_core,
    stores: ["postgres", "nats"],
    dials: ["billing"],
  },
  // new-service: entries
];

/** The gateway: the only workload the ingress reaches, and the caller of every public/user RPC. */
export const gatewayService = { name: "gateway", port: 8080, stores: ["nats"] as readonly Store[] } as const;

/** Dials that the call graph does not allow (a service calling what policy would deny), as messages. */
export function forbiddenDials(graph: CallGraph, services: readonly MeshService[] = meshServices): string[] {
  return services.flatMap((s) =>
    s.dials
      .filter((target) => !graph.services.find((t) => t.name === target)?.callers[s.name])
      .map((target) => `${s.name} dials ${target}, but no method of ${target} lists ${s.name} as a caller`),
  );
}

/** gRPC paths of grpc.health.v1.Health, which the gateway calls for active health checks. */
export const healthPaths: readonly string[] = Health.methods.map((m) => `/${Health.typeName}/${m.name}`);

/** How safe a method is to send twice, from its idempotency_level. */
export type Idempotency = "no_side_effects" | "idempotent" | "unknown";

/** One gRPC method of a service and who may call it. */
export interface MethodEdge {
  /** The HTTP/2 path, /<package>.<Service>/<Method>. */
  readonly path: string;
  readonly audience: "public" | "user" | "internal" | "health";
  readonly idempotency: Idempotency;
  /** True for server-, client- or bidi-streaming methods (no route timeout, no retries). */
  readonly streaming: boolean;
  /** Service accounts allowed to call it, sorted. */
  readonly callers: readonly string[];
}

/** One service in the graph: its methods and, per caller, the paths that caller may use. */
export interface ServiceNode {
  readonly name: string;
  readonly port: number;
  readonly adminPort: number;
  readonly methods: readonly MethodEdge[];
  /** caller service account → sorted paths it may call. */
  readonly callers: Readonly<Record<string, readonly string[]>>;
}

/** The whole graph, services in registry order. */
export interface CallGraph {
  readonly services: readonly ServiceNode[];
}

function idempotencyOf(method: DescMethod): Idempotency {
  if (method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS) return "no_side_effects";
  if (method.idempotency === MethodOptions_IdempotencyLevel.IDEMPOTENT) return "idempotent";
  return "unknown";
}

function methodEdge(method: DescMethod): MethodEdge {
  const rule = methodAccess(method);
  const path = `/${method.parent.typeName}/${method.name}`;
  // A method without the option would pass the kit's access interceptor unchecked: refuse it here.
  if (!rule) throw new Error(`${path} declares no (trellis.common.v1.access) option`);
  const callers = rule.audience === "internal" ? [...new Set(rule.callers)].sort() : [gatewayService.name];
  return {
    path,
    audience: rule.audience,
    idempotency: idempotencyOf(method),
    streaming: method.methodKind !== "unary",
    callers,
  };
}

/** Derives the call graph from the services' contracts; throws on a method without an access rule. */
export function buildCallGraph(services: readonly MeshService[] = meshServices): CallGraph {
  const names = new Set(services.map((s) => s.name));
  return {
    services: services.map((service) => {
      if (service.file.services.length === 0) throw new Error(`${service.file.name} declares no service`);
      const methods = service.file.services.flatMap((s) => s.methods.map(methodEdge));
      for (const m of Health.methods) {
        methods.push({
          path: `/${Health.typeName}/${m.name}`,
          audience: "health",
          idempotency: "no_side_effects",
          streaming: m.methodKind !== "unary",
          callers: [gatewayService.name],
        });
      }
      const callers: Record<string, string[]> = {};
      for (const method of methods) {
        for (const caller of method.callers) {
          if (caller !== gatewayService.name && !names.has(caller)) {
            throw new Error(`${method.path} names caller '${caller}', which is not a mesh service`);
          }
          callers[caller] = [...(callers[caller] ?? []), method.path];
        }
      }
      const sorted = Object.fromEntries(
        Object.keys(callers)
          .sort()
          .map((caller) => [caller, [...(callers[caller] ?? [])].sort()]),
      );
      return {
        name: service.name,
        port: service.port,
        adminPort: service.port + 1000,
        methods,
        callers: sorted,
      };
    }),
  };
}

/** The services a caller may call (its outgoing edges), sorted. */
export function calleesOf(graph: CallGraph, caller: string): string[] {
  return graph.services
    .filter((s) => s.callers[caller] !== undefined)
    .map((s) => s.name)
    .sort();
}

/** Every (caller, service, path) edge of the graph as "caller -> service path" strings, sorted. */
export function callEdges(graph: CallGraph): string[] {
  return graph.services
    .flatMap((s) =>
      Object.entries(s.callers).flatMap(([caller, paths]) => paths.map((p) => `${caller} -> ${s.name} ${p}`)),
    )
    .sort();
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(`${JSON.stringify(buildCallGraph(), null, 2)}\n`);
}
