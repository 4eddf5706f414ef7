// `npm run certs [-- --dir .certs] [--force] [--new-ca] [service …]`: a development CA and one certificate per
// service with a SPIFFE-style URI SAN (spiffe://trellis.local/ns/trellis/sa/<service>), made with
// the openssl command line. Each certificate serves both as the service's server certificate
// (DNS SANs localhost and <service>) and as its client certificate for mTLS calls.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

/** The services (and the gateway) that get a certificate by default. */
export const defaultIdentities = ["auth", "analytics", "billing", "core", "gateway"] as const;

/** The SPIFFE id a service's certificate carries. */
export function spiffeId(service: string): string {
  return `spiffe://trellis.local/ns/trellis/sa/${service}`;
}

const namePattern = /^[a-z][a-z0-9-]{0,62}$/;

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

/**
 * Writes ca.pem/ca-key.pem (when missing, or when newCa) and <service>.pem/<service>-key.pem into dir;
 * returns the paths written. force re-signs the named services; a new CA re-signs every service named.
 */
export function makeCertificates(
  dir: string,
  services: readonly string[],
  force = false,
  newCa = false,
): string[] {
  for (const s of services) {
    if (!namePattern.test(s)) throw new Error(`bad service name '${s}': lowercase letters, digits and '-'`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const written: string[] = [];
  const caMissing = !existsSync(join(dir, "ca.pem"));
  if (newCa || caMissing) {
    openssl(
      ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "825"]
        .concat(["-subj", "/O=Trellis/CN=Trellis development CA", "-keyout", "ca-key.pem", "-out", "ca.pem"])
        .concat([
          "-addext",
          "basicConstraints=critical,CA:TRUE",
          "-addext",
          "keyUsage=critical,keyCertSign,cRLSign",
        ]),
      dir,
    );
    written.push(join(dir, "ca.pem"));
  }
  for (const service of services) {
    // Certificates signed by an old CA would no longer verify: a new CA re-signs every one named.
    if (!force && !newCa && !caMissing && existsSync(join(dir, `${service}.pem`))) continue;
    const ext = join(dir, `${service}.ext`);
    writeFileSync(
      ext,
      [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=serverAuth,clientAuth",
        `subjectAltName=URI:${spiffeId(service)},DNS:${service},DNS:localhost,IP:127.0.0.1`,
      ].join("\n"),
    );
    openssl(
      ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"].concat([
        "-subj",
        `/O=Trellis/CN=${service}`,
        "-keyout",
        `${service}-key.pem`,
        "-out",
        `${service}.csr`,
      ]),
      dir,
    );
    openssl(
      [
        "x509",
        "-req",
        "-in",
        `${service}.csr`,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
      ].concat(["-days", "397", "-out", `${service}.pem`, "-extfile", `${service}.ext`]),
      dir,
    );
    execFileSync("rm", ["-f", `${service}.csr`, `${service}.ext`], { cwd: dir });
    written.push(join(dir, `${service}.pem`));
  }
  return written;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      dir: { type: "string", default: ".certs" },
      force: { type: "boolean", default: false },
      "new-ca": { type: "boolean", default: false },
    },
  });
  const dir = resolve(values.dir);
  const newCa = values["new-ca"] === true;
  if (newCa && positionals.length > 0) {
    console.error("certs: --new-ca re-signs every service; name none");
    process.exit(2);
  }
  const services = positionals.length > 0 ? positionals : [...defaultIdentities];
  try {
    const written = makeCertificates(dir, services, values.force, newCa);
    console.log(written.length > 0 ? `wrote ${written.join(", ")}` : `certificates in ${dir} are up to date`);
    console.log(
      `a service uses TLS_CERT_FILE=${dir}/<service>.pem TLS_KEY_FILE=${dir}/<service>-key.pem TLS_CA_FILE=${dir}/ca.pem`,
    );
  } catch (error) {
    console.error(`certs: ${error instanceof Error ? error.message : error}`);
    process.exit(1);
  }
}
