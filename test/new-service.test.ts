// scripts/new-service.ts in a temporary copy of the repository: the new service passes buf lint,
// biome, tsc and its own real-server test there, and gets its policy, compose entry and manifests;
// a colliding name or port writes nothing.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse } from "yaml";
import { createService, NewServiceError, validateRequest } from "../scripts/new-service.ts";

const root = new URL("..", import.meta.url).pathname;
const name = "notification";
const port = 8005;

/** Copies the work tree (tracked and untracked, not ignored) to a new temp dir, node_modules linked. */
function copyRepository(): string {
  const dest = mkdtempSync(join(tmpdir(), "trellis-new-service-"));
  const files = execFileSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], {
    cwd: root,
  })
    .toString()
    .split("\0")
    .filter((f) => f !== "" && existsSync(join(root, f)));
  for (const file of files) {
    const from = join(root, file);
    const to = join(dest, file);
    mkdirSync(dirname(to), { recursive: true });
    if (lstatSync(from).isSymbolicLink()) symlinkSync(readlinkSync(from), to);
    else copyFileSync(from, to);
  }
  // Packages resolve from the real node_modules, except the workspace links, which must point
  // into the copy (the copy's gen/ gets the new service's code).
  const modules = join(dest, "node_modules");
  mkdirSync(join(modules, "@trellis"), { recursive: true });
  for (const entry of readdirSync(join(root, "node_modules"))) {
    if (entry !== "@trellis") symlinkSync(join(root, "node_modules", entry), join(modules, entry));
  }
  const workspaces: Record<string, string> = { kit: "packages/kit", gen: "packages/gen" };
  for (const [pkg, dir] of Object.entries(workspaces))
    symlinkSync(join(dest, dir), join(modules, "@trellis", pkg));
  // A workspace's own nested node_modules (versions that could not be hoisted).
  for (const dir of Object.values(workspaces)) {
    const nested = join(root, dir, "node_modules");
    if (existsSync(nested)) symlinkSync(nested, join(dest, dir, "node_modules"));
  }
  return dest;
}

function snapshot(dir: string): string {
  const files = execFileSync("git", ["ls-files", "--others", "--exclude-standard", "--cached"], {
    cwd: root,
  }).toString();
  return files
    .split("\n")
    .filter((f) => f !== "" && existsSync(join(dir, f)))
    .map(
      (f) =>
        `${f}:${lstatSync(join(dir, f)).isSymbolicLink() ? "link" : readFileSync(join(dir, f), "utf8").length}`,
    )
    .join("\n");
}

function run(cwd: string, command: string, args: string[]): string {
  // Without this, a child `node --test` reports to this runner instead of printing.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  try {
    return execFileSync(command, args, {
      cwd,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...env, PATH: `${join(cwd, "node_modules", ".bin")}:${env.PATH ?? ""}` },
    });
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string };
    assert.fail(`${command} ${args.join(" ")} failed:\n${e.stdout ?? ""}\n${e.stderr ?? ""}`);
  }
}

describe("npm run new-service", () => {
  let copy: string;
  before(() => {
    copy = copyRepository();
  });
  after(() => rmSync(copy, { recursive: true, force: true }));

  const refusals: [string, string, number][] = [
    ["an existing service", "billing", 8005],
    ["the gateway's name", "gateway", 8005],
    ["a name with capitals", "Notify", 8005],
    ["a name with a slash", "a/b", 8005],
    ["a port in use", name, 8003],
    ["a port whose admin port is in use", name, 8080 - 1000],
    ["the gateway's admin port", name, 9080],
    ["an infrastructure port", name, 4222],
    ["a port out of range", name, 65000],
  ];
  for (const [what, n, p] of refusals) {
    test(`refuses ${what} and writes nothing`, () => {
      const before_ = snapshot(copy);
      assert.throws(() => validateRequest(copy, n, p), NewServiceError);
      assert.throws(() => createService(copy, { name: n, port: p, install: false }), NewServiceError);
      assert.equal(snapshot(copy), before_);
    });
  }

  test("a failure after the first write rolls everything back", () => {
    const graphPath = join(copy, "scripts/call-graph.ts");
    const original = readFileSync(graphPath, "utf8");
    writeFileSync(graphPath, original.replace("// new-service: imports", "// (marker removed)"));
    try {
      const before_ = snapshot(copy);
      assert.throws(() => createService(copy, { name, port, install: false }), /rolled back/);
      assert.equal(snapshot(copy), before_);
      assert.equal(existsSync(join(copy, "services", name)), false);
    } finally {
      writeFileSync(graphPath, original);
    }
  });

  test("creates a service that passes buf lint, biome, tsc and its own test", { timeout: 120_000 }, () => {
    const paths = createService(copy, { name, port, install: false });
    assert.ok(paths.includes(`services/${name}/src/server.ts`));

    run(copy, "buf", ["lint"]);
    run(copy, "biome", ["check", `services/${name}`, "scripts/call-graph.ts"]);
    writeFileSync(
      join(copy, "tsconfig.new-service.json"),
      JSON.stringify({
        extends: "./tsconfig.json",
        include: [`services/${name}/src`, `services/${name}/test`],
      }),
    );
    run(copy, "tsc", ["-p", "tsconfig.new-service.json"]);
    const output = run(copy, process.execPath, [
      "--import",
      "tsx",
      "--test",
      `services/${name}/test/${name}.test.ts`,
    ]);
    assert.match(output, /# fail 0/);
    assert.match(output, /# pass [1-9]/);

    // Its place in the mesh: call graph, policy, manifests, compose, Prometheus.
    const graph = JSON.parse(run(copy, process.execPath, ["--import", "tsx", "scripts/call-graph.ts"]));
    const node = graph.services.find((s: { name: string }) => s.name === name);
    assert.deepEqual(Object.keys(node.callers), ["gateway"]);
    assert.ok(node.callers.gateway.includes(`/trellis.${name}.v1.NotificationService/Ping`));
    run(copy, process.execPath, ["--import", "tsx", "scripts/manifests.ts", "--check"]);
    const manifests = readFileSync(join(copy, `istio/${name}.yaml`), "utf8");
    for (const kind of [
      "ServiceAccount",
      "Deployment",
      "Service",
      "HorizontalPodAutoscaler",
      "PodDisruptionBudget",
    ]) {
      assert.match(manifests, new RegExp(`^kind: ${kind}$`, "m"));
    }
    assert.match(manifests, /cluster\.local\/ns\/trellis\/sa\/gateway/);
    const compose = parse(readFileSync(join(copy, "compose.yaml"), "utf8"));
    assert.equal(compose.services[name].build.dockerfile, `services/${name}/Dockerfile`);
    assert.equal(compose.services[name].environment.PORT, String(port));
    assert.match(
      readFileSync(join(copy, "deploy/prometheus.yml"), "utf8"),
      new RegExp(`${name}:${port + 1000}`),
    );

    // A second run for the same name is a collision now.
    assert.throws(() => createService(copy, { name, port: 8006, install: false }), NewServiceError);
  });
});
