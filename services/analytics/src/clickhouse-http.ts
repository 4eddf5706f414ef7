import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";

/** SELECTs over ClickHouse's HTTP interface: one POST per statement, rows as JSONEachRow text. */
export interface HttpSelect {
  /** Runs a SELECT (no FORMAT clause) and answers the JSONEachRow body; rejects on any failure. */
  select(statement: string): Promise<string>;
  close(): void;
}

/** A ClickHouse HTTP error: the server's status and the start of its message (for logs only). */
export class ClickHouseHttpError extends Error {
  override name = "ClickHouseHttpError";
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(`ClickHouse answered ${status}: ${message}`);
  }
}

/**
 * The read path of the server backend. @clickhouse/client costs a few milliseconds per query in
 * its own machinery, which QueryMetrics' latency budget (the same SQL sent directly, +5 ms) cannot
 * afford; this is a keep-alive agent and one request written in one piece. The URL is read as the
 * client reads it: credentials for basic auth, a path naming the database.
 */
export function createHttpSelect(
  url: string,
  settings: Readonly<Record<string, string>>,
  timeoutMs: number,
): HttpSelect {
  const target = new URL(url);
  const secure = target.protocol === "https:";
  const agent = secure ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
  const request = secure ? httpsRequest : httpRequest;
  const params = new URLSearchParams(settings);
  // Errors found while the answer is produced then come back as an HTTP error, not a cut-off body.
  params.set("wait_end_of_query", "1");
  const database = decodeURIComponent(target.pathname.replace(/^\/+|\/+$/g, ""));
  if (database) params.set("database", database);
  const headers: Record<string, string> = { "content-type": "text/plain; charset=utf-8" };
  if (target.username || target.password) {
    const user = decodeURIComponent(target.username || "default");
    const credentials = `${user}:${decodeURIComponent(target.password)}`;
    headers.authorization = `Basic ${Buffer.from(credentials).toString("base64")}`;
  }
  const options = {
    host: target.hostname.replace(/^\[|\]$/g, ""),
    port: Number(target.port) || (secure ? 443 : 80),
    method: "POST",
    path: `/?${params}`,
    agent,
    timeout: timeoutMs,
  };
  return {
    select(statement) {
      const body = Buffer.from(`${statement}\nFORMAT JSONEachRow`);
      return new Promise<string>((resolve, reject) => {
        const req = request(
          { ...options, headers: { ...headers, "content-length": String(body.length) } },
          (res: IncomingMessage) => {
            const chunks: Buffer[] = [];
            res.on("data", (chunk: Buffer) => chunks.push(chunk));
            res.on("error", reject);
            res.on("end", () => {
              const text = Buffer.concat(chunks).toString("utf8");
              if (res.statusCode === 200) resolve(text);
              else reject(new ClickHouseHttpError(res.statusCode ?? 0, text.slice(0, 2000)));
            });
          },
        );
        req.on("timeout", () => {
          req.destroy(Object.assign(new Error("ClickHouse query timed out"), { code: "ETIMEDOUT" }));
        });
        req.on("error", reject);
        req.end(body);
      });
    },
    close() {
      agent.destroy();
    },
  };
}
