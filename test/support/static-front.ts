// Stand-in for the gateway's WEB_DIR serving, used only while the gateway lacks it: serves the
// built console and passes every other request (RPCs, streams) through to the gateway, so the
// browser still sees one origin.
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer, request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { extname, join, normalize } from "node:path";

const types: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
};

/** A running front. */
export interface StaticFront {
  readonly url: string;
  close(): Promise<void>;
}

/** Starts the front on 127.0.0.1:0. */
export async function startStaticFront(webDir: string, gatewayUrl: string): Promise<StaticFront> {
  const upstream = new URL(gatewayUrl);
  const server = createServer(async (req, res) => {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    if (req.method === "GET" && !path.startsWith("/trellis.") && !path.startsWith("/.well-known")) {
      const file = normalize(join(webDir, path === "/" ? "index.html" : path));
      if (file.startsWith(webDir)) {
        const info = await stat(file).catch(() => undefined);
        if (info?.isFile()) {
          res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" });
          createReadStream(file).pipe(res);
          return;
        }
      }
    }
    const proxied = httpRequest(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    proxied.on("error", () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(proxied);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
