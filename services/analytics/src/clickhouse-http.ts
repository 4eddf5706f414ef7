import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";

/** SELECTs and inserts over ClickHouse's HTTP interface: one POST per statement, rows as JSONEachRow text. */
export interface HttpSelect {
  /** Runs a SELECT (no FORMAT clause) and answers the JSONEachRow body; rejects on any failure. */
  select(statement: string): Promise<string>;
  /** Inserts JSONEachRow text (one row per line) into table (a qualified, quoted name); rejects on any failure. */
  insert(table: string, rows: Uint8Array): Promise<void>;
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

/** A kept-alive socket reset (or found closed, EPIPE) when reused, before any answer: the server had most likely closed it idle. */
export class ReusedSocketReset extends Error {
  override name = "ReusedSocketReset";
  readonly code = "ECONNRESET";
  constructor(override readonly cause: Error) {
    super(`ClickHouse reset a reused connection: ${cause.message}`);
  }
}

/**
 * The read and insert path of the server backend. @clickhouse/client costs a few milliseconds per query in
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
  // An idle socket is dropped before the server drops it: with a timeout set, node's agent keeps a
  // free socket for the server's `Keep-Alive: timeout=N` hint less one second (ClickHouse says 3 s),
  // else for timeoutMs.
  const agentOptions = { keepAlive: true, timeout: timeoutMs };
  const agent = secure ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions);
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
  };
  // One POST: path carries the settings (and, for an insert, the INSERT statement), body the rest.
  // A reused socket reset before any answer (the server closed it while idle) rejects with
  // ReusedSocketReset: a SELECT is then sent once more, on a connection of its own (the agent's
  // other idle sockets may be just as dead: the server closes them all alike). An insert is not:
  // its caller (the ingest consumer) retries by redelivery, which first drops the ids already stored.
  const post = (path: string, body: Uint8Array, pooled = true) =>
    new Promise<string>((resolve, reject) => {
      let answered = false;
      const req = request(
        {
          ...options,
          path,
          headers: { ...headers, "content-length": String(body.byteLength) },
          ...(pooled ? {} : { agent: false }),
        },
        (res: IncomingMessage) => {
          answered = true;
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
      // Set on the request, not in its options: node's agent leaves a reused socket's idle timeout
      // as it kept it free (the server's hint less a second, 2 s for ClickHouse) when the request's
      // timeout option equals its own, and then a query silent for 2 s (wait_end_of_query) failed.
      req.setTimeout(timeoutMs, () => {
        req.destroy(Object.assign(new Error("ClickHouse query timed out"), { code: "ETIMEDOUT" }));
      });
      req.on("error", (error: NodeJS.ErrnoException) => {
        const closed = error.code === "ECONNRESET" || error.code === "EPIPE";
        const stale = req.reusedSocket && closed && !answered;
        reject(stale ? new ReusedSocketReset(error) : error);
      });
      req.end(body);
    });
  return {
    select(statement) {
      const body = Buffer.from(`${statement}\nFORMAT JSONEachRow`);
      return post(options.path, body).catch((error: unknown) => {
        if (!(error instanceof ReusedSocketReset)) throw error;
        return post(options.path, body, false);
      });
    },
    async insert(table, rows) {
      const insert = new URLSearchParams(params);
      insert.set("query", `INSERT INTO ${table} FORMAT JSONEachRow`);
      await post(`/?${insert}`, rows);
    },
    close() {
      agent.destroy();
    },
  };
}
