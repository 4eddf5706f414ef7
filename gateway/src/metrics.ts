import { Counter, Gauge, type Registry } from "prom-client";
import type { InstancePool } from "./balancer.js";
import type { RateLimiter } from "./rate-limit.js";
import type { RevocationList } from "./revocations.js";

/** The gateway's own metrics beside the per-RPC ones: limits, retries, upstream health, deny-list. */
export function registerGatewayMetrics(
  registry: Registry,
  state: {
    readonly pools: Readonly<Record<string, InstancePool>>;
    readonly limiter: RateLimiter;
    readonly revocations: RevocationList;
  },
) {
  const registers = [registry];
  new Gauge({
    name: "gateway_upstream_instances_usable",
    help: "Upstream instances neither ejected nor failing health checks, by upstream.",
    labelNames: ["upstream"] as const,
    registers,
    collect() {
      for (const [upstream, pool] of Object.entries(state.pools))
        this.set({ upstream }, pool.usable().length);
    },
  });
  new Gauge({
    name: "gateway_upstream_in_flight",
    help: "Calls in flight per upstream instance.",
    labelNames: ["upstream", "instance"] as const,
    registers,
    collect() {
      for (const [upstream, pool] of Object.entries(state.pools)) {
        for (const instance of pool.instances)
          this.set({ upstream, instance: instance.url }, instance.inFlight);
      }
    },
  });
  new Gauge({
    name: "gateway_rate_limit_buckets",
    help: "Token buckets held in memory.",
    registers,
    collect() {
      this.set(state.limiter.size);
    },
  });
  new Gauge({
    name: "gateway_revoked_sessions",
    help: "Revoked sessions whose access tokens are still refused.",
    registers,
    collect() {
      this.set(state.revocations.size);
    },
  });
  return {
    limited: new Counter({
      name: "gateway_rate_limited_total",
      help: "Calls refused by a rate limit, by scope and method.",
      labelNames: ["scope", "method"] as const,
      registers,
    }),
    retries: new Counter({
      name: "gateway_upstream_retries_total",
      help: "Calls resent to another instance after a connection failure.",
      labelNames: ["upstream", "method"] as const,
      registers,
    }),
  };
}
