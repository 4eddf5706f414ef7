import type { ServerResponse } from "node:http";
import { type HealthState, ServingStatus } from "@trellis/kit/health.js";
import type { Logger } from "pino";
import type { JwksSource } from "./jwks.js";
import { buildOpenApi } from "./openapi.js";
import type { RestRoute } from "./rest.js";
import type { NodeRequest, NodeResponse } from "./rest-http.js";
import type { RoutedService } from "./routes.js";

/** What the fixed endpoints read. */
export interface EndpointOptions {
  readonly services: readonly RoutedService[];
  readonly routes: readonly RestRoute[];
  readonly health: HealthState;
  readonly jwks: JwksSource;
  readonly logger: Logger;
}

/**
 * The gateway's own GET endpoints on the public port: /healthz, /readyz, /openapi.json and
 * /.well-known/jwks.json (auth's keys, cached). The returned function answers true when it served.
 */
export function createEndpoints(options: EndpointOptions) {
  const { health, jwks, logger } = options;
  let openapi: string | undefined;
  const send = (res: NodeResponse, status: number, type: string, body: string, cache = "no-store") => {
    (res as ServerResponse).writeHead(status, { "content-type": type, "cache-control": cache });
    res.end(body);
  };
  return (req: NodeRequest, res: NodeResponse, path: string): boolean => {
    if (req.method !== "GET") return false;
    switch (path) {
      case "/healthz":
        if (health.shuttingDown) send(res, 503, "text/plain; charset=utf-8", "shutting down\n");
        else send(res, 200, "text/plain; charset=utf-8", "ok\n");
        return true;
      case "/readyz":
        if (health.status() === ServingStatus.SERVING) send(res, 200, "text/plain; charset=utf-8", "ready\n");
        else
          send(
            res,
            503,
            "text/plain; charset=utf-8",
            `not ready: ${health.failing().join(", ") || "starting"}\n`,
          );
        return true;
      case "/openapi.json":
        openapi ??= JSON.stringify(buildOpenApi(options.services, options.routes));
        send(res, 200, "application/json", openapi, "public, max-age=300");
        return true;
      case "/.well-known/jwks.json":
        jwks.get().then(
          (keys) => send(res, 200, "application/json", JSON.stringify(keys), "public, max-age=60"),
          (error: unknown) => {
            logger.warn({ err: error }, "JWKS unavailable");
            send(
              res,
              503,
              "application/json",
              JSON.stringify({ code: "unavailable", message: "keys unavailable" }),
            );
          },
        );
        return true;
      default:
        return false;
    }
  };
}
