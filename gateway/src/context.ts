import { createContextKey } from "@connectrpc/connect";

/** The client's address (the socket peer, or X-Forwarded-For's first hop when the proxy is trusted). */
export const clientAddressKey = createContextKey<string>("", { description: "gateway client address" });

/** The X-Forwarded-For value to send upstream: the incoming chain plus the socket peer. */
export const forwardedForKey = createContextKey<string>("", { description: "gateway x-forwarded-for" });
