// Run as a child process by http2-sessions.test.ts: a client's idle connection gets a GOAWAY
// (the server closes it), and right then the client's session manager is aborted (argv[3]
// "abort": a service shutting down at the same moment) or asked for a new stream ("request": the
// next call, which reconnects). Exits 0 unless an uncaught error ends the process first.
// argv[2]: "guarded" (the kit's manager) or "plain" (connect-node's).
import { once } from "node:events";
import { createServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { Http2SessionManager } from "@connectrpc/connect-node";
import { GuardedHttp2SessionManager } from "../../src/http2-sessions.js";

const server = createServer();
server.on("stream", (stream) => {
  const session = stream.session;
  stream.respond({ ":status": 200 });
  stream.end("ok");
  // Once the answer is out, the server closes the session: a GOAWAY (NO_ERROR), no open streams.
  stream.on("close", () => session?.close());
});
server.listen(0, "127.0.0.1");
await once(server, "listening");
const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const manager =
  process.argv[2] === "guarded" ? new GuardedHttp2SessionManager(url) : new Http2SessionManager(url);

const stream = await manager.request("POST", "/", {}, {});
stream.resume();
stream.end();
const session = stream.session;
if (!session) throw new Error("no session");
const aborted = new Promise<void>((resolve) => {
  // Registered after the manager's own listener, which has destroyed the session by now.
  session.once("goaway", () => {
    if (process.argv[3] === "abort") {
      manager.abort();
      resolve();
      return;
    }
    manager.request("POST", "/", {}, {}).then((next) => {
      next.resume();
      next.end();
      next.on("close", () => {
        manager.abort();
        resolve();
      });
    });
  });
});
await aborted;
await new Promise((resolve) => setTimeout(resolve, 300));
server.close();
console.log("survived");
