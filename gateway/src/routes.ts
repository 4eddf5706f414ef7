import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { AnalyticsService } from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { AuthService } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { BillingService } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { CoreService } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { methodAccess } from "@trellis/kit/access.js";
import type { UpstreamName } from "./config.js";

/** A service the gateway fronts and the upstream that owns it. */
export interface RoutedService {
  readonly upstream: UpstreamName;
  readonly desc: DescService;
  /** Its public and user methods: the only ones the gateway serves. */
  readonly methods: readonly DescMethod[];
}

/** The four services and the upstream owning each. */
export const serviceOwners: ReadonlyArray<{ readonly upstream: UpstreamName; readonly desc: DescService }> = [
  { upstream: "auth", desc: AuthService },
  { upstream: "analytics", desc: AnalyticsService },
  { upstream: "billing", desc: BillingService },
  { upstream: "core", desc: CoreService },
];

/**
 * True when the gateway may serve method: its access option says public or user. Internal
 * methods, and methods declaring no access rule at all (fail closed), are never routed.
 */
export function isRoutable(method: DescMethod): boolean {
  const rule = methodAccess(method);
  return rule !== undefined && rule.audience !== "internal";
}

/** The routed services of the given owners (all four by default), with their routable methods. */
export function routedServices(owners = serviceOwners): RoutedService[] {
  return owners.map(({ upstream, desc }) => ({ upstream, desc, methods: desc.methods.filter(isRoutable) }));
}

/** "<package.Service>/<Method>", the name rate limits and logs use. */
export function methodName(method: DescMethod): string {
  return `${method.parent.typeName}/${method.name}`;
}
