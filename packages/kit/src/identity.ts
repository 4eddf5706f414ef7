import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";

/** A request from node:http or node:http2, as the Connect Node adapter hands it over. */
export type NodeServerRequest = IncomingMessage | Http2ServerRequest;

/** How the server may learn who is calling: from its TLS peer, or from the mesh's forwarded header. */
export interface IdentityOptions {
  /** The server terminates TLS itself and requires client certificates. */
  readonly tls: boolean;
  /** Without TLS, believe Istio's x-forwarded-client-cert header (only behind a sidecar). */
  readonly trustForwardedIdentity: boolean;
}

// spiffe://<trust domain>/<any path>/sa/<service account>
const spiffeServiceAccount = /^spiffe:\/\/[^/\s]+\/(?:[^/\s]+\/)*sa\/([A-Za-z0-9][A-Za-z0-9._-]*)$/;

/** The service account a SPIFFE id names (`spiffe://td/ns/x/sa/<name>` → name), or undefined. */
export function serviceAccountFromSpiffeId(uri: string): string | undefined {
  return spiffeServiceAccount.exec(uri.trim())?.[1];
}

/**
 * The service account from a certificate's subjectaltname as Node formats it
 * (`URI:spiffe://…, DNS:…`; values with special characters come JSON-quoted), or undefined.
 */
export function serviceAccountFromSubjectAltName(subjectAltName: string | undefined): string | undefined {
  if (!subjectAltName) return undefined;
  for (const entry of splitOutsideQuotes(subjectAltName, ",")) {
    const trimmed = entry.trim();
    if (!trimmed.startsWith("URI:")) continue;
    let value = trimmed.slice(4);
    if (value.startsWith('"')) {
      try {
        value = JSON.parse(value) as string;
      } catch {
        continue;
      }
    }
    const name = serviceAccountFromSpiffeId(value);
    if (name) return name;
  }
  return undefined;
}

/**
 * The service account from Envoy/Istio's x-forwarded-client-cert header, taken from the last
 * element (the one the local sidecar added for the peer it verified), or undefined.
 */
export function serviceAccountFromForwardedClientCert(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const elements = splitOutsideQuotes(header, ",").filter((e) => e.trim() !== "");
  const last = elements.at(-1);
  if (last === undefined) return undefined;
  for (const pair of splitOutsideQuotes(last, ";")) {
    const eq = pair.indexOf("=");
    if (eq < 0) continue;
    if (pair.slice(0, eq).trim().toLowerCase() !== "uri") continue;
    const name = serviceAccountFromSpiffeId(unquote(pair.slice(eq + 1).trim()));
    if (name) return name;
  }
  return undefined;
}

/** The calling service's account name for a request, per the options; undefined when unknown. */
export function peerServiceIdentity(req: NodeServerRequest, options: IdentityOptions): string | undefined {
  if (options.tls) return serviceAccountFromTlsPeer(req);
  if (!options.trustForwardedIdentity) return undefined;
  const header = req.headers["x-forwarded-client-cert"];
  return serviceAccountFromForwardedClientCert(Array.isArray(header) ? header.join(",") : header);
}

/**
 * peerServiceIdentity with the TLS peer's answer remembered per connection (a certificate cannot
 * change within one), so each request does not re-read and re-parse it.
 */
export function createPeerIdentityResolver(
  options: IdentityOptions,
): (req: NodeServerRequest) => string | undefined {
  if (!options.tls) return (req) => peerServiceIdentity(req, options);
  const byConnection = new WeakMap<object, string | undefined>();
  return (req) => {
    const socket = req.socket as object | undefined;
    if (!socket) return undefined;
    if (byConnection.has(socket)) return byConnection.get(socket);
    const name = serviceAccountFromTlsPeer(req);
    byConnection.set(socket, name);
    return name;
  };
}

interface PeerCertificateSocket {
  readonly authorized?: boolean;
  getPeerCertificate(detailed?: boolean): { subjectaltname?: string } | null;
}

function serviceAccountFromTlsPeer(req: NodeServerRequest): string | undefined {
  // For HTTP/2 requests, req.socket is a proxy to the session's TLS socket, so duck-type it.
  const socket = req.socket as unknown as Partial<PeerCertificateSocket> | undefined;
  if (!socket || typeof socket.getPeerCertificate !== "function" || socket.authorized !== true) {
    return undefined;
  }
  const cert = socket.getPeerCertificate(false);
  return serviceAccountFromSubjectAltName(cert?.subjectaltname);
}

function unquote(value: string): string {
  if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
    return value.slice(1, -1).replace(/\\(.)/g, "$1");
  }
  return value;
}

function splitOutsideQuotes(input: string, separator: string): string[] {
  const parts: string[] = [];
  let current = "";
  let quoted = false;
  for (let i = 0; i < input.length; i++) {
    const ch = input[i] as string;
    if (quoted && ch === "\\" && i + 1 < input.length) {
      current += ch + input[i + 1];
      i++;
      continue;
    }
    if (ch === '"') quoted = !quoted;
    if (ch === separator && !quoted) {
      parts.push(current);
      current = "";
      continue;
    }
    current += ch;
  }
  parts.push(current);
  return parts;
}
