import { createServer as createHttp1Server, type IncomingMessage, type ServerResponse } from "node:http";
import {
  createServer as createHttp2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from "node:http2";
import { type AddressInfo, createServer as createTcpServer, type Socket } from "node:net";
import type { Logger } from "pino";

/** A request handler both node:http and node:http2 (compat API) can call. */
export type DualHandler = (
  req: IncomingMessage | Http2ServerRequest,
  res: ServerResponse | Http2ServerResponse,
) => void;

/** One port serving HTTP/1.1 and HTTP/2 with prior knowledge (h2c). */
export interface DualListener {
  readonly port: number;
  /** True once close() began: HTTP/1.1 responses should carry `connection: close`. */
  readonly closing: boolean;
  /** Stops accepting, lets open requests finish for up to graceMs, then drops what is left. */
  close(graceMs: number): Promise<void>;
}

const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/**
 * Listens on host:port and hands each connection to an HTTP/2 server when it opens with the
 * HTTP/2 connection preface, else to an HTTP/1.1 server: curl and browsers, and gRPC clients,
 * on the same port.
 */
export async function listenDual(options: {
  host: string;
  port: number;
  handler: DualHandler;
  logger: Logger;
}): Promise<DualListener> {
  const { logger } = options;
  const http1 = createHttp1Server({ keepAliveTimeout: 65_000 }, options.handler);
  const http2 = createHttp2Server({}, options.handler);
  const sockets = new Set<Socket>();
  const sessions = new Set<ServerHttp2Session>();
  let closing = false;

  http2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    if (closing) session.close();
  });
  http2.on("sessionError", (error) => logger.debug({ err: error }, "http2 session error"));
  http1.on("clientError", (error, socket) => {
    logger.debug({ err: error }, "http1 client error");
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
    else socket.destroy();
  });

  const tcp = createTcpServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    let seen: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, preface.length);
      const isH2Prefix = seen.subarray(0, n).equals(preface.subarray(0, n));
      // A few bytes that could still become the preface: wait for more.
      if (isH2Prefix && n < 4) return;
      socket.off("data", onData);
      socket.pause();
      socket.unshift(seen);
      if (isH2Prefix) {
        http2.emit("connection", socket);
      } else {
        // Node's HTTP/1.1 parser would read the socket's handle directly and miss the bytes
        // already read; marking the handle consumed makes it read through the stream instead.
        const handle = (socket as unknown as { _handle?: { _consumed?: boolean } })._handle;
        if (handle) handle._consumed = true;
        http1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
  });

  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(options.port, options.host, () => {
      tcp.off("error", reject);
      resolve();
    });
  });

  let closed: Promise<void> | undefined;
  return {
    port: (tcp.address() as AddressInfo).port,
    get closing() {
      return closing;
    },
    close(graceMs) {
      closed ??= (async () => {
        closing = true;
        const stopped = new Promise<void>((resolve) => tcp.close(() => resolve()));
        for (const session of sessions) session.close();
        http1.closeIdleConnections();
        const deadline = Date.now() + graceMs;
        while (sockets.size > 0 && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 25));
          http1.closeIdleConnections();
        }
        for (const session of sessions) session.destroy();
        for (const socket of sockets) socket.destroy();
        await stopped;
      })();
      return closed;
    },
  };
}
