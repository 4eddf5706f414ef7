import { createContextKey } from "@connectrpc/connect";

/** The signed-in user a request acts for, built from a verified access token. */
export interface Principal {
  /** User id (token `sub`). */
  readonly userId: string;
  /** Tenant id (token `tid`): every read and write of the request is scoped to it. */
  readonly tenantId: string;
  /** Session id (token `sid`). */
  readonly sessionId: string;
  /** Role names granted in the tenant. */
  readonly roles: readonly string[];
  /** Permission strings granted in the tenant, e.g. "billing.invoices.read". */
  readonly permissions: ReadonlySet<string>;
  /** The raw bearer token, kept only to forward it on calls to other services. Never log it. */
  readonly token: string;
}

/** The verified principal of the request, or undefined for public and service-to-service calls. */
export const principalKey = createContextKey<Principal | undefined>(undefined, {
  description: "trellis principal",
});

/**
 * The calling service's account name (e.g. "core"), from its mTLS client certificate's SPIFFE
 * URI SAN, or from the mesh's forwarded client certificate header when the kit is told to trust it.
 * Undefined when the caller presented no service identity.
 */
export const callerServiceKey = createContextKey<string | undefined>(undefined, {
  description: "trellis caller service",
});

/** The request id (x-request-id in, or generated), for logs and for forwarding. */
export const requestIdKey = createContextKey<string>("", { description: "trellis request id" });
