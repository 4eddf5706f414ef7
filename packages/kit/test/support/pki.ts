import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** PEM strings for a certificate and its key. */
export interface KeyPair {
  readonly cert: string;
  readonly key: string;
}

/** A throwaway CA and a function issuing certificates with a SPIFFE URI SAN under it. */
export interface TestPki {
  readonly ca: string;
  /** Issues a cert for service account `name` (spiffe://trellis.local/ns/trellis/sa/<name>). */
  issue(name: string, { ca }?: { ca?: "own" | "other" }): Promise<KeyPair>;
  dispose(): Promise<void>;
}

/** Creates a throwaway CA with the openssl CLI (EC P-256), in a private temp directory. */
export async function createTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), "trellis-pki-"));
  const makeCa = async (prefix: string) => {
    await run("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-days",
      "1",
      "-subj",
      `/CN=${prefix}`,
      "-keyout",
      join(dir, `${prefix}.key`),
      "-out",
      join(dir, `${prefix}.crt`),
    ]);
  };
  await makeCa("ca");
  let otherCa = false;
  let serial = 1;
  return {
    ca: await readFile(join(dir, "ca.crt"), "utf8"),
    async issue(name, { ca = "own" } = {}) {
      const issuer = ca === "own" ? "ca" : "other-ca";
      if (ca === "other" && !otherCa) {
        await makeCa("other-ca");
        otherCa = true;
      }
      const base = join(dir, `${name}-${serial++}`);
      await writeFile(
        `${base}.ext`,
        [
          "basicConstraints=CA:FALSE",
          "keyUsage=digitalSignature",
          "extendedKeyUsage=serverAuth,clientAuth",
          `subjectAltName=URI:spiffe://trellis.local/ns/trellis/sa/${name},DNS:localhost,IP:127.0.0.1`,
        ].join("\n"),
      );
      await run("openssl", [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        `/CN=${name}`,
        "-keyout",
        `${base}.key`,
        "-out",
        `${base}.csr`,
      ]);
      await run("openssl", [
        "x509",
        "-req",
        "-in",
        `${base}.csr`,
        "-CA",
        join(dir, `${issuer}.crt`),
        "-CAkey",
        join(dir, `${issuer}.key`),
        // A random serial per certificate: -CAcreateserial shares one serial file, which two
        // certificates issued at once read and write together ("Unable to load number").
        "-set_serial",
        `0x${randomBytes(16).toString("hex")}`,
        "-days",
        "1",
        "-extfile",
        `${base}.ext`,
        "-out",
        `${base}.crt`,
      ]);
      return { cert: await readFile(`${base}.crt`, "utf8"), key: await readFile(`${base}.key`, "utf8") };
    },
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
}
