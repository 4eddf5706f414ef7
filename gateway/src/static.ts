import { createReadStream, realpathSync } from "node:fs";
import { stat } from "node:fs/promises";
import type { ServerResponse } from "node:http";
import { extname, join, resolve, sep } from "node:path";
import type { NodeRequest, NodeResponse } from "./rest-http.js";

const contentTypes: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".map": "application/json",
  ".txt": "text/plain; charset=utf-8",
};

/**
 * Serves the built browser console from dir on GET/HEAD: files by path (never outside dir), and
 * index.html for any other path without an extension (client-side routes). Resolves false when it
 * did not serve, so the caller can answer 404.
 */
export function createStaticFiles(dir: string) {
  const root = realpathSync(resolve(dir));
  const fileAt = async (path: string): Promise<string | undefined> => {
    let decoded: string;
    try {
      decoded = decodeURIComponent(path);
    } catch {
      return undefined;
    }
    if (decoded.includes("\0")) return undefined;
    const candidate = resolve(join(root, decoded));
    if (candidate !== root && !candidate.startsWith(root + sep)) return undefined;
    try {
      const info = await stat(candidate);
      if (info.isFile()) return candidate;
      if (info.isDirectory()) {
        const index = join(candidate, "index.html");
        if ((await stat(index)).isFile()) return index;
      }
    } catch {
      // not there: maybe a client-side route
    }
    return extname(decoded) === "" ? join(root, "index.html") : undefined;
  };
  return async (req: NodeRequest, res: NodeResponse, path: string): Promise<boolean> => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    // API paths that matched no route stay 404s, never the console's page.
    if (path.startsWith("/v1/") || path.startsWith("/trellis.") || path.startsWith("/grpc.")) return false;
    const file = await fileAt(path);
    if (!file) return false;
    let size: number;
    try {
      size = (await stat(file)).size;
    } catch {
      return false;
    }
    // Vite's hashed assets never change; index.html must be revalidated.
    const immutable = path.startsWith("/assets/");
    (res as ServerResponse).writeHead(200, {
      "content-type": contentTypes[extname(file)] ?? "application/octet-stream",
      "content-length": size,
      "cache-control": immutable ? "public, max-age=31536000, immutable" : "no-cache",
      "x-content-type-options": "nosniff",
    });
    if (req.method === "HEAD") {
      res.end();
      return true;
    }
    createReadStream(file).pipe(res as ServerResponse);
    return true;
  };
}
