import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A certificate and its key, as PEM. */
export interface KeyPair {
  readonly cert: string;
  readonly key: string;
}

/** A throwaway CA issuing service certificates with a SPIFFE URI SAN. */
export interface TestPki {
  readonly ca: string;
  /** A certificate for service account name: spiffe://trellis.local/ns/trellis/sa/<name>, plus 127.0.0.1. */
  issue(name: string): Promise<KeyPair>;
  dispose(): Promise<void>;
}

/** Creates the CA with the openssl CLI (EC P-256) in a private temporary directory. */
export async function createTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), "core-pki-"));
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await run("openssl", [
    "req",
    "-x509",
    ...ec,
    "-days",
    "1",
    "-subj",
    "/CN=test-ca",
    "-keyout",
    join(dir, "ca.key"),
    "-out",
    join(dir, "ca.crt"),
  ]);
  let serial = 0;
  return {
    ca: await readFile(join(dir, "ca.crt"), "utf8"),
    async issue(name) {
      const base = join(dir, `${name}-${++serial}`);
      await writeFile(
        `${base}.ext`,
        [
          "basicConstraints=CA:FALSE",
          "keyUsage=digitalSignature",
          "extendedKeyUsage=serverAuth,clientAuth",
          `subjectAltName=URI:spiffe://trellis.local/ns/trellis/sa/${name},IP:127.0.0.1`,
        ].join("\n"),
      );
      await run("openssl", [
        "req",
        ...ec,
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
        join(dir, "ca.crt"),
        "-CAkey",
        join(dir, "ca.key"),
        "-CAcreateserial",
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
