import type { Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { createInstancePool, type InstancePool } from "./balancer.js";
import { type GatewayConfig, type UpstreamName, upstreamAddresses, upstreamNames } from "./config.js";
import { serviceOwners } from "./routes.js";

/** One instance pool per upstream service, from the configured addresses. */
export function createPools(
  config: GatewayConfig,
  logger: Logger,
  interceptors: Interceptor[],
  tls: { readonly cert: string; readonly key: string; readonly ca: string } | undefined,
): Record<UpstreamName, InstancePool> {
  const addresses = upstreamAddresses(config);
  const pools = {} as Record<UpstreamName, InstancePool>;
  for (const name of upstreamNames) {
    pools[name] = createInstancePool({
      name,
      urls: addresses[name],
      healthService: serviceOwners.find((o) => o.upstream === name)?.desc.typeName ?? "",
      ejectAfter: config.EJECT_AFTER_FAILURES,
      cooldownMs: config.EJECT_COOLDOWN,
      healthIntervalMs: config.HEALTH_CHECK_INTERVAL,
      interceptors,
      logger,
      ...(tls
        ? {
            tls: {
              ...tls,
              serverIdentity: `spiffe://${config.SPIFFE_TRUST_DOMAIN}/ns/${config.SPIFFE_NAMESPACE}/sa/${name}`,
            },
          }
        : {}),
    });
  }
  return pools;
}
