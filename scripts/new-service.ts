// `npm run new-service -- <name> --port <port> [--no-install]`: a new kit-based service with one
// sample RPC — its contract (buf lint clean), generated code, workspace with a real-server test,
// Dockerfile, call-graph entry, and (regenerated from those) its Kubernetes/Istio manifests,
// compose entry and Prometheus target. Name and port are checked first: on a collision nothing
// is written; on a later failure everything written is rolled back.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { gatewayService } from "./call-graph.ts";
import {
  dockerfile,
  fileExport,
  mainTs,
  packageJson,
  protoFile,
  protoSegment,
  serverTs,
  serviceTest,
  workspaceDir,
} from "./service-templates.ts";

/** A request the generator refuses (bad or colliding name or port); nothing was written. */
export class NewServiceError extends Error {
  override name = "NewServiceError";
}

/** Options of createService. */
export interface NewServiceOptions {
  readonly name: string;
  readonly port: number;
  /** Run `npm install` at the end to link the workspace and update the lockfile (default true). */
  readonly install?: boolean;
  /** Where progress lines go (default: nowhere). */
  readonly log?: (line: string) => void;
}

const namePattern = /^[a-z][a-z0-9]{1,19}$/;
const reserved = new Set(["common", "testing", "kit", "gen", "web", "istio", "trellis", "gateway"]);
// Ports the compose stack and the mesh already use besides the workloads' own.
const infraPorts = new Set([
  4222, 4317, 4318, 5432, 8123, 8222, 9000, 9090, 9009, 13133, 15000, 15001, 15006, 15020, 15021, 15090,
]);

/** The services registered in root's scripts/call-graph.ts (read as text: root may be another copy). */
export function registeredServices(root: string): { name: string; port: number }[] {
  const text = readFileSync(join(root, "scripts/call-graph.ts"), "utf8");
  const start = text.indexOf("export const meshServices");
  const end = text.indexOf("// new-service: entries", start);
  if (start < 0 || end < 0)
    throw new Error("scripts/call-graph.ts lost its meshServices registry or markers");
  return [...text.slice(start, end).matchAll(/name:\s*"([a-z0-9-]+)",\s*port:\s*(\d+)/g)].map((m) => ({
    name: m[1] as string,
    port: Number(m[2]),
  }));
}

/** Checks name and port against the repository at root; throws NewServiceError naming the problem. */
export function validateRequest(root: string, name: string, port: number): void {
  if (!namePattern.test(name)) {
    throw new NewServiceError(
      `bad name '${name}': 2 to 20 lowercase letters and digits, starting with a letter`,
    );
  }
  if (reserved.has(name)) throw new NewServiceError(`'${name}' is reserved`);
  const registered = registeredServices(root);
  if (registered.some((s) => s.name === name)) throw new NewServiceError(`service '${name}' already exists`);
  for (const path of [
    workspaceDir(name),
    `proto/trellis/${protoSegment(name)}`,
    `gen/trellis/${protoSegment(name)}`,
  ]) {
    if (existsSync(join(root, path))) throw new NewServiceError(`${path} already exists`);
  }
  if (!Number.isInteger(port) || port < 1024 || port + 1000 > 65535) {
    throw new NewServiceError(
      `bad port ${port}: an integer from 1024 to 64535 (its admin port is port + 1000)`,
    );
  }
  const taken = new Map<number, string>();
  for (const w of [...registered, gatewayService]) {
    taken.set(w.port, w.name);
    taken.set(w.port + 1000, `${w.name} (admin)`);
  }
  for (const p of [port, port + 1000]) {
    const owner = taken.get(p) ?? (infraPorts.has(p) ? "the infrastructure" : undefined);
    if (owner) throw new NewServiceError(`port ${p} is already used by ${owner}`);
  }
}

/** The call-graph.ts text with the new service's import and registry entry added at the markers. */
export function addToCallGraph(source: string, name: string, port: number): string {
  const seg = protoSegment(name);
  const importMarker = "// new-service: imports";
  const entryMarker = "  // new-service: entries";
  if (!source.includes(importMarker) || !source.includes(entryMarker)) {
    throw new Error("scripts/call-graph.ts lost its new-service markers");
  }
  return source
    .replace(
      importMarker,
      `import { ${fileExport(name)} } from "@trellis/gen/trellis/${seg}/v1/${seg}_pb.js";\n${importMarker}`,
    )
    .replace(
      entryMarker,
      `  { name: "${name}", port: ${port}, file: ${fileExport(name)}, stores: [], dials: [] },\n${entryMarker}`,
    );
}

function run(root: string, command: string, args: string[]): void {
  const bin = join(root, "node_modules", ".bin");
  execFileSync(command, args, {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` },
  });
}

/** Creates the service in the repository at root; returns the paths it created or changed. */
export function createService(root: string, options: NewServiceOptions): string[] {
  const { name, port, install = true, log = () => {} } = options;
  validateRequest(root, name, port);
  const seg = protoSegment(name);
  const dir = workspaceDir(name);
  const created: string[] = [];
  const edited = new Map<string, string>();
  const write = (path: string, text: string) => {
    const full = join(root, path);
    mkdirSync(dirname(full), { recursive: true });
    writeFileSync(full, text);
    created.push(path);
  };
  const edit = (path: string, change: (text: string) => string) => {
    const full = join(root, path);
    const before = readFileSync(full, "utf8");
    if (!edited.has(path)) edited.set(path, before);
    writeFileSync(full, change(before));
  };
  // Files the regenerated outputs replace: restored on failure.
  const regenerated = [
    "compose.yaml",
    "deploy/prometheus.yml",
    "deploy/postgres-init.sql",
    "package-lock.json",
  ];
  const snapshots = new Map(
    regenerated.filter((p) => existsSync(join(root, p))).map((p) => [p, readFileSync(join(root, p), "utf8")]),
  );
  // Validation proved these absent: on failure they go entirely.
  const ownedDirs = [dir, `proto/trellis/${seg}`, `gen/trellis/${seg}`];
  try {
    write(`proto/trellis/${seg}/v1/${seg}.proto`, protoFile(name));
    write(`${dir}/package.json`, packageJson(name));
    write(`${dir}/src/main.ts`, mainTs(name));
    write(`${dir}/src/server.ts`, serverTs(name, port));
    write(`${dir}/test/${name}.test.ts`, serviceTest(name));
    write(`${dir}/Dockerfile`, dockerfile(name, port));
    edit("scripts/call-graph.ts", (text) => addToCallGraph(text, name, port));
    // The repository's formatter has the last word on layout and import order.
    run(root, "biome", ["check", "--write", dir, "scripts/call-graph.ts"]);
    log("buf generate");
    run(root, "buf", ["generate"]);
    created.push(`gen/trellis/${seg}`);
    log("npm run manifests");
    // A child process: this one has the old call graph loaded.
    run(root, process.execPath, ["--import", "tsx", "scripts/manifests.ts"]);
    created.push(`istio/${name}.yaml`);
    if (install) {
      log("npm install");
      run(root, "npm", ["install", "--no-audit", "--no-fund"]);
    }
    return [...created, ...edited.keys(), ...snapshots.keys()];
  } catch (error) {
    for (const path of [...created, ...ownedDirs]) rmSync(join(root, path), { recursive: true, force: true });
    for (const [path, text] of [...edited, ...snapshots]) writeFileSync(join(root, path), text);
    const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`new-service failed, changes rolled back${stderr ? `:\n${stderr}` : ""}`, {
      cause: error,
    });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { port: { type: "string" }, "no-install": { type: "boolean", default: false } },
  });
  const [name] = positionals;
  if (!name || values.port === undefined || positionals.length !== 1) {
    console.error("usage: npm run new-service -- <name> --port <port> [--no-install]");
    process.exit(2);
  }
  const root = new URL("..", import.meta.url).pathname;
  try {
    const paths = createService(root, {
      name,
      port: Number(values.port),
      install: !values["no-install"],
      log: (line) => console.log(`… ${line}`),
    });
    console.log(`created ${name} on port ${values.port}:\n  ${paths.join("\n  ")}`);
    console.log(
      [
        "next:",
        `  npm test -- services/${name}           # its tests`,
        `  npm run certs -- ${name}               # its certificate, for docker compose`,
        "  the gateway routes only the services it knows: add it to gateway/src/config.ts (upstreamNames)",
      ].join("\n"),
    );
  } catch (error) {
    console.error(`new-service: ${error instanceof Error ? error.message : error}`);
    process.exit(1);
  }
}
