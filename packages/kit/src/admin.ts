import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { type HealthState, ServingStatus } from "./health.js";

/** Options for startAdminServer. */
export interface AdminServerOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly health: HealthState;
  readonly metrics: Registry;
  readonly logger: Logger;
  /** More GET routes by exact path, e.g. auth's /.well-known/jwks.json. */
  readonly routes?: Readonly<Record<string, AdminRoute>>;
}

/** A GET route of the admin server: answers a content type and a body. */
export type AdminRoute = () => Promise<{ readonly contentType: string; readonly body: string }>;

/** A listening admin server. */
export interface AdminServer {
  readonly port: number;
  /** Stops listening and drops open connections. */
  close(): Promise<void>;
}

/**
 * Starts the HTTP/1.1 admin server: GET /healthz (200 unless shutting down), /readyz (200 only
 * while SERVING, else 503), /metrics (Prometheus text); anything else 404.
 */
export async function startAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  const { health, metrics, logger } = options;
  const routes = new Map(Object.entries(options.routes ?? {}));
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?", 1)[0] ?? "/";
    const known = path === "/healthz" || path === "/readyz" || path === "/metrics" || routes.has(path);
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(known ? 405 : 404).end();
      return;
    }
    const route = routes.get(path);
    if (route) {
      route().then(
        ({ contentType, body }) => {
          res.writeHead(200, { "content-type": contentType, "cache-control": "max-age=60" });
          res.end(req.method === "HEAD" ? undefined : body);
        },
        (error: unknown) => {
          logger.error({ err: error, path }, "admin route failed");
          res.writeHead(503, { "content-type": "text/plain; charset=utf-8" }).end("unavailable\n");
        },
      );
      return;
    }
    const text = (status: number, body: string) => {
      res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    switch (path) {
      case "/healthz":
        if (health.shuttingDown) text(503, "shutting down\n");
        else text(200, "ok\n");
        return;
      case "/readyz":
        if (health.status() === ServingStatus.SERVING) text(200, "ready\n");
        else {
          const failing = health.failing();
          text(
            503,
            health.shuttingDown ? "shutting down\n" : `not ready: ${failing.join(", ") || "starting"}\n`,
          );
        }
        return;
      case "/metrics":
        metrics.metrics().then(
          (body) => {
            res.writeHead(200, { "content-type": metrics.contentType, "cache-control": "no-store" });
            res.end(req.method === "HEAD" ? undefined : body);
          },
          (error: unknown) => {
            logger.error({ err: error }, "collecting metrics failed");
            text(500, "metrics unavailable\n");
          },
        );
        return;
      default:
        text(404, "not found\n");
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
