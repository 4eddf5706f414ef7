import { createClient } from "@connectrpc/connect";
import { AuthService, type Jwk } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import type { FetchImplementation, JSONWebKeySet, JWK } from "jose";
import { type Instance, type InstancePool, isConnectionFailure } from "./balancer.js";

/** Auth's public keys, read through AuthService.GetJwks and cached. */
export interface JwksSource {
  /** The cached key set, refreshed once it is older than the cache time (stale kept on failure). */
  get(): Promise<JSONWebKeySet>;
  /** A jose fetch implementation answering with a fresh key set (the verifier throttles it). */
  readonly fetch: FetchImplementation;
}

function toJwk(key: Jwk): JWK {
  const jwk: JWK = { kty: key.kty, kid: key.kid, alg: key.alg, use: key.use || "sig", x: key.x };
  if (key.crv) jwk.crv = key.crv;
  if (key.y) jwk.y = key.y;
  return jwk;
}

/** Creates a JWKS source over auth's instances; cacheMs 0 means every get() asks auth. */
export function createJwksSource(pool: InstancePool, cacheMs: number, timeoutMs = 3000): JwksSource {
  let cached: { keys: JSONWebKeySet; at: number } | undefined;
  let pending: Promise<JSONWebKeySet> | undefined;

  const load = async (): Promise<JSONWebKeySet> => {
    const tried = new Set<Instance>();
    for (;;) {
      const instance = pool.pick(tried);
      if (!instance) throw new Error("no auth instance answered GetJwks");
      tried.add(instance);
      try {
        const res = await createClient(AuthService, instance.transport).getJwks({}, { timeoutMs });
        pool.record(instance, undefined);
        const keys = { keys: res.keys.map(toJwk) };
        cached = { keys, at: Date.now() };
        return keys;
      } catch (error) {
        pool.record(instance, error);
        if (!isConnectionFailure(error)) throw error;
      }
    }
  };
  const fresh = () => {
    pending ??= load().finally(() => {
      pending = undefined;
    });
    return pending;
  };

  return {
    async get() {
      if (cached && Date.now() - cached.at < cacheMs) return cached.keys;
      try {
        return await fresh();
      } catch (error) {
        if (cached) return cached.keys;
        throw error;
      }
    },
    fetch: async () =>
      new Response(JSON.stringify(await fresh()), { headers: { "content-type": "application/json" } }),
  };
}
