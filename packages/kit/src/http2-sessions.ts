import type { ClientHttp2Session, ClientHttp2Stream } from "node:http2";
import { Http2SessionManager } from "@connectrpc/connect-node";

type RequestArgs = Parameters<Http2SessionManager["request"]>;

/**
 * connect-node's HTTP/2 session manager, guarded against a crash in it (connect-es #1768, still in
 * 2.2.0): a GOAWAY on an idle connection makes the manager destroy the session with an error that
 * Node raises only once the socket has closed; if the manager leaves that connection's state first
 * (a new request reconnects, or abort() on shutdown), it has removed its error listener and the
 * late error is uncaught, ending the process. Every session this manager opens a stream on gets a
 * listener that ignores such a late error (the manager's own listener handles errors while it
 * still watches the session).
 */
export class GuardedHttp2SessionManager extends Http2SessionManager {
  readonly #guarded = new WeakSet<ClientHttp2Session>();

  override async request(...args: RequestArgs): Promise<ClientHttp2Stream> {
    const stream = await super.request(...args);
    const session = stream.session as ClientHttp2Session | undefined;
    if (session && !this.#guarded.has(session)) {
      this.#guarded.add(session);
      session.on("error", ignoreLateError);
    }
    return stream;
  }
}

function ignoreLateError(): void {
  // The manager's own "error" listener, while attached, is what acts on a session error.
}
