// scripts/certs.ts: a development CA and per-service certificates whose URI SAN is the service's
// SPIFFE id, usable for mutual TLS in both directions.
import assert from "node:assert/strict";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { connect, createServer, type TLSSocket } from "node:tls";
import { serviceAccountFromSubjectAltName } from "@trellis/kit/identity.js";
import { makeCertificates, spiffeId } from "../scripts/certs.ts";

describe("npm run certs", () => {
  let dir: string;
  let other: string;
  const pem = (d: string, name: string) => readFileSync(join(d, name), "utf8");

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "trellis-certs-"));
    other = mkdtempSync(join(tmpdir(), "trellis-certs-other-"));
    makeCertificates(dir, ["billing", "core"]);
    makeCertificates(other, ["core"]);
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
    rmSync(other, { recursive: true, force: true });
  });

  test("each certificate carries its SPIFFE id and DNS name, and is signed by the CA", () => {
    const ca = new X509Certificate(pem(dir, "ca.pem"));
    assert.equal(ca.ca, true);
    for (const service of ["billing", "core"]) {
      const cert = new X509Certificate(pem(dir, `${service}.pem`));
      assert.ok(cert.subjectAltName?.split(", ").includes(`URI:${spiffeId(service)}`), cert.subjectAltName);
      assert.ok(cert.subjectAltName?.split(", ").includes(`DNS:${service}`));
      assert.equal(serviceAccountFromSubjectAltName(cert.subjectAltName), service);
      assert.equal(cert.ca, false);
      assert.ok(cert.checkIssued(ca));
      assert.ok(cert.verify(ca.publicKey));
      assert.ok(cert.checkPrivateKey(createPrivateKey(pem(dir, `${service}-key.pem`))));
    }
  });

  test("a certificate from another CA does not verify", () => {
    const ca = new X509Certificate(pem(dir, "ca.pem"));
    const foreign = new X509Certificate(pem(other, "core.pem"));
    assert.equal(foreign.verify(ca.publicKey), false);
  });

  test("a second run keeps existing files; --force replaces the named service's and keeps the rest valid", () => {
    const scratch = mkdtempSync(join(tmpdir(), "trellis-certs-force-"));
    try {
      makeCertificates(scratch, ["billing", "core"]);
      const core = pem(scratch, "core.pem");
      assert.deepEqual(makeCertificates(scratch, ["core"]), []);
      assert.equal(pem(scratch, "core.pem"), core);
      makeCertificates(scratch, ["core"], true);
      assert.notEqual(pem(scratch, "core.pem"), core);
      // billing was not named: its certificate must still verify against the (possibly new) CA.
      const ca = new X509Certificate(pem(scratch, "ca.pem"));
      assert.ok(
        new X509Certificate(pem(scratch, "billing.pem")).verify(ca.publicKey),
        "billing still verifies",
      );
      assert.ok(new X509Certificate(pem(scratch, "core.pem")).verify(ca.publicKey), "core verifies");
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  });

  test("a bad service name is refused before anything is written", () => {
    const empty = join(tmpdir(), `trellis-certs-none-${process.pid}`);
    assert.throws(() => makeCertificates(empty, ["Bad/Name"]));
    assert.equal(existsSync(empty), false);
  });

  test("mutual TLS between two services: each side sees the other's service account", async () => {
    const server = createServer({
      cert: pem(dir, "billing.pem"),
      key: pem(dir, "billing-key.pem"),
      ca: pem(dir, "ca.pem"),
      requestCert: true,
      rejectUnauthorized: true,
    });
    const seen = new Promise<string | undefined>((resolve) => {
      server.on("secureConnection", (socket: TLSSocket) => {
        resolve(serviceAccountFromSubjectAltName(socket.getPeerCertificate().subjectaltname));
        socket.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    const client = connect({
      host: "127.0.0.1",
      port,
      servername: "billing",
      cert: pem(dir, "core.pem"),
      key: pem(dir, "core-key.pem"),
      ca: pem(dir, "ca.pem"),
    });
    const serverAccount = await new Promise<string | undefined>((resolve, reject) => {
      client.once("secureConnect", () =>
        resolve(serviceAccountFromSubjectAltName(client.getPeerCertificate().subjectaltname)),
      );
      client.once("error", reject);
    });
    assert.equal(serverAccount, "billing");
    assert.equal(await seen, "core");
    client.destroy();
    await new Promise((resolve) => server.close(resolve));
    assert.ok(statSync(join(dir, "ca-key.pem")).isFile());
  });
});
