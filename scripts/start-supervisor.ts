// Runs the services as child processes: restarts one that crashes (with backoff), prints their
// pino JSON lines as one readable combined log, and stops them all cleanly.
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";

/** One child process to supervise. */
export interface ChildSpec {
  readonly name: string;
  /** The TypeScript entry point, run with tsx. */
  readonly entry: string;
  readonly env: Readonly<Record<string, string | undefined>>;
}

/** The running set of children. */
export interface Supervisor {
  /** Resolves once url answers 200, or rejects after timeoutMs. */
  ready(url: string, timeoutMs: number): Promise<void>;
  /** SIGTERM to every child, SIGKILL to those still up after 15 s; answers the names of those that did not exit 0. */
  stop(): Promise<string[]>;
}

const levels: Record<number, string> = {
  10: "TRACE",
  20: "DEBUG",
  30: "INFO ",
  40: "WARN ",
  50: "ERROR",
  60: "FATAL",
};
const hidden = new Set(["level", "time", "pid", "hostname", "service", "msg"]);

/** One pino JSON line as `HH:MM:SS name  LEVEL message key=value …`; other lines as they are. */
export function formatLine(name: string, line: string): string {
  const label = name.padEnd(9);
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line);
  } catch {
    return `${new Date().toISOString().slice(11, 19)} ${label} ${line}`;
  }
  const time = typeof entry.time === "number" ? new Date(entry.time) : new Date();
  const fields = Object.entries(entry)
    .filter(([k]) => !hidden.has(k))
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
  // pino writes the level as a number, or as its label where a formatter says so (the kit's does).
  const level =
    typeof entry.level === "string"
      ? entry.level.toUpperCase().padEnd(5)
      : (levels[Number(entry.level)] ?? "INFO ");
  return `${time.toISOString().slice(11, 19)} ${label} ${level} ${entry.msg ?? ""}${fields ? ` ${fields}` : ""}`;
}

/** Starts every child and keeps it running until stop(). */
export function superviseAll(
  specs: readonly ChildSpec[],
  { cwd, log }: { cwd: string; log: (line: string) => void },
): Supervisor {
  const running = new Map<string, ChildProcess>();
  let stopping = false;

  const launch = (spec: ChildSpec, attempt: number) => {
    const startedAt = Date.now();
    const child = spawn(process.execPath, ["--import", "tsx", spec.entry], {
      cwd,
      // Supervised: a child ignores SIGINT (Ctrl-C reaches the whole process group); stop() sends
      // the one SIGTERM it drains on.
      env: { ...process.env, ...spec.env, TRELLIS_SUPERVISED: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    running.set(spec.name, child);
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on("line", (line) =>
        process.stdout.write(`${formatLine(spec.name, line)}\n`),
      );
    }
    child.once("exit", (code, signal) => {
      running.delete(spec.name);
      if (stopping) return;
      // A child that stayed up a minute starts over with a short delay; a crash loop backs off to 30 s.
      const next = Date.now() - startedAt > 60_000 ? 0 : attempt + 1;
      const delay = Math.min(30_000, 500 * 2 ** next);
      log(`${spec.name} exited (${signal ?? `code ${code}`}); restarting in ${delay} ms`);
      setTimeout(() => {
        if (!stopping) launch(spec, next);
      }, delay).unref();
    });
  };
  for (const spec of specs) launch(spec, 0);

  return {
    async ready(url, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        try {
          const res = await fetch(url);
          if (res.ok) return;
        } catch {
          // not up yet
        }
        if (Date.now() > deadline) throw new Error(`${url} did not become ready in ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 300));
      }
    },
    async stop() {
      stopping = true;
      const exits = [...running].map(
        ([name, child]) =>
          new Promise<string | undefined>((resolve) => {
            if (child.exitCode !== null) return resolve(child.exitCode === 0 ? undefined : name);
            const kill = setTimeout(() => child.kill("SIGKILL"), 15_000);
            child.once("exit", (code, signal) => {
              clearTimeout(kill);
              if (code === 0) return resolve(undefined);
              log(`${name} did not shut down cleanly (${signal ?? `code ${code}`})`);
              resolve(name);
            });
            child.kill("SIGTERM");
          }),
      );
      return (await Promise.all(exits)).filter((name) => name !== undefined);
    },
  };
}
