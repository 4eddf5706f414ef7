// The embedded stores of `npm start`: PGlite behind pglite-socket (so services keep using the
// postgres driver) and a nats-server child process with JetStream. Both keep their data on disk.
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { PGlite } from "@electric-sql/pglite";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";

/** A store the launcher stops on the way out. */
export interface Stoppable {
  readonly url: string;
  stop(): Promise<void>;
}

/** Opens (or creates) a PGlite database in dir and serves it on 127.0.0.1:port, one connection at a time. */
export async function startEmbeddedPostgres(dir: string, port: number): Promise<Stoppable> {
  mkdirSync(dir, { recursive: true });
  const db = await PGlite.create(dir);
  const server = new PGLiteSocketServer({ db, port, host: "127.0.0.1", maxConnections: 1 });
  await server.start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      await server.stop();
      await db.close();
    },
  };
}

/** Starts nats-server with JetStream on 127.0.0.1:port, its store in dir; resolves once it is ready. */
export async function startEmbeddedNats(dir: string, port: number): Promise<Stoppable> {
  mkdirSync(dir, { recursive: true });
  // Its own process group: Ctrl-C in the terminal would stop it at once, before the services have
  // drained and flushed their outbox relays to it; the launcher stops it last, and kills it if the
  // launcher itself exits any other way.
  const child = spawn("nats-server", ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir], {
    stdio: ["ignore", "ignore", "pipe"],
    detached: true,
  });
  const killOnExit = () => child.kill("SIGTERM");
  process.once("exit", killOnExit);
  child.once("exit", () => process.off("exit", killOnExit));
  await new Promise<void>((resolve, reject) => {
    let output = "";
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("Server is ready")) {
        child.stderr.off("data", onData);
        child.stderr.resume();
        resolve();
      }
    };
    child.stderr.on("data", onData);
    child.once("error", reject);
    child.once("exit", (code) =>
      reject(new Error(`nats-server exited with ${code} (is port ${port} taken?): ${output.slice(-500)}`)),
    );
  });
  return {
    url: `nats://127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}
