import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import http2 from "node:http2";
import { promisify } from "node:util";

const run = promisify(execFile);

/** One h2load run's numbers. */
export interface LoadResult {
  readonly requests: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly rps: number;
  readonly meanMs: number;
  readonly sdMs: number;
}

/** Inputs of a load run: the same for every target of one benchmark. */
export interface LoadOptions {
  readonly requests: number;
  readonly clients: number;
  readonly streams: number;
  readonly headers: Record<string, string>;
  readonly bodyFile: string;
}

/** Runs h2load (Debian's nghttp2-client) against an h2c URL and parses its summary. */
export async function h2load(url: string, o: LoadOptions): Promise<LoadResult> {
  const args = ["-n", String(o.requests), "-c", String(o.clients), "-m", String(o.streams), "-t", "1"];
  for (const [k, v] of Object.entries(o.headers)) args.push("-H", `${k}: ${v}`);
  args.push("-d", o.bodyFile, url);
  // BENCH_LOAD_CPU=n pins h2load to CPU n.
  const pin = process.env.BENCH_LOAD_CPU;
  const [command, ...prefix] = pin ? ["taskset", "-c", pin, "h2load"] : ["h2load"];
  const { stdout } = await run(command as string, [...prefix, ...args], { maxBuffer: 1 << 24 });
  const rps = Number(/finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(stdout)?.[1]);
  const counts = /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/.exec(stdout);
  const latency =
    /time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/.exec(
      stdout,
    );
  if (!counts || !latency || Number.isNaN(rps)) throw new Error(`cannot parse h2load output:\n${stdout}`);
  const ms = (v: string | undefined, unit: string | undefined) =>
    Number(v) * (unit === "us" ? 0.001 : unit === "s" ? 1000 : 1);
  return {
    requests: o.requests,
    succeeded: Number(counts[2]),
    failed: Number(counts[3]),
    rps,
    meanMs: ms(latency[5], latency[6]),
    sdMs: ms(latency[7], latency[8]),
  };
}

/** Writes a benchmark's results and inputs to bench/results/<name>.json. */
export async function writeResults(name: string, data: unknown): Promise<string> {
  const dir = new URL("./results/", import.meta.url);
  await mkdir(dir, { recursive: true });
  const file = new URL(`${name}.json`, dir);
  await writeFile(file, `${JSON.stringify(data, null, 2)}\n`);
  return file.pathname;
}

/** Encodes one gRPC length-prefixed message frame. */
export function grpcFrame(message: Uint8Array): Uint8Array {
  const frame = new Uint8Array(5 + message.length);
  new DataView(frame.buffer).setUint32(1, message.length);
  frame.set(message, 5);
  return frame;
}

/** A unary gRPC call as raw frames: the method's path, the encoded request, extra headers. */
export interface RawCall {
  readonly path: string;
  readonly body: Uint8Array;
  readonly headers?: Readonly<Record<string, string>>;
}

/**
 * A lean gRPC unary client over one HTTP/2 connection, for benchmarks whose client shares the
 * machine's two cores with the service: it sends prebuilt frames and hands back the answer's
 * message bytes undecoded, so the service, not the client library, is what runs out of CPU
 * (pgbench is C). It rejects with the grpc-status and grpc-message of a failed call.
 */
export function rawGrpcClient(baseUrl: string): { call(c: RawCall): Promise<Uint8Array>; close(): void } {
  const session = http2.connect(baseUrl);
  session.on("error", () => {});
  return {
    call({ path, body, headers }) {
      return new Promise((resolve, reject) => {
        const stream = session.request({
          ":method": "POST",
          ":path": path,
          "content-type": "application/grpc+proto",
          te: "trailers",
          ...headers,
        });
        let status: string | undefined;
        let message = "";
        const chunks: Buffer[] = [];
        const take = (h: http2.IncomingHttpHeaders) => {
          if (h["grpc-status"] !== undefined) {
            status = String(h["grpc-status"]);
            message = decodeURIComponent(String(h["grpc-message"] ?? ""));
          }
        };
        stream.on("response", take);
        stream.on("trailers", take);
        stream.on("data", (chunk: Buffer) => chunks.push(chunk));
        stream.on("error", reject);
        stream.on("close", () => {
          // One uncompressed message: a 5-byte prefix, then the bytes.
          if (status === "0") resolve(Buffer.concat(chunks).subarray(5));
          else reject(new Error(`grpc-status ${status ?? "missing"} (${stream.rstCode ?? 0}): ${message}`));
        });
        stream.end(grpcFrame(body));
      });
    },
    close: () => session.close(),
  };
}

/**
 * CPU seconds (user + system) each named process has used so far, read from /proc (Linux); a
 * process that is gone or unreadable reads as NaN. Differences between two readings say where a
 * phase's CPU went.
 */
export function processCpu(pids: Readonly<Record<string, number | undefined>>): Record<string, number> {
  const ticks = 100; // USER_HZ on Linux
  const out: Record<string, number> = {};
  for (const [name, pid] of Object.entries(pids)) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out[name] = (Number(fields[11]) + Number(fields[12])) / ticks;
    } catch {
      out[name] = Number.NaN;
    }
  }
  return out;
}

/** The process id of a running program by its name (pgrep -o -x), or undefined. */
export async function pidOf(program: string): Promise<number | undefined> {
  try {
    const { stdout } = await run("pgrep", ["-o", "-x", program.slice(0, 15)]);
    return Number(stdout.trim()) || undefined;
  } catch {
    return undefined;
  }
}

/** The machine's CPU time so far, in seconds summed over all CPUs: busy (not idle or iowait) and total. */
export function machineCpu(): { busy: number; total: number } {
  const fields =
    readFileSync("/proc/stat", "utf8").split("\n")[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  return { busy: (total - idle) / 100, total: total / 100 };
}
