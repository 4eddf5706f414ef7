// One password-hashing thread (see createPasswordHasher in passwords.ts): takes HashJobs from its
// port in order and answers each with a HashResult, so the next hash starts the moment the last
// one ends, whatever the main thread is busy with. Plain JavaScript: a worker thread does not get
// the service's TypeScript loader.
import { readlinkSync } from "node:fs";
import { setPriority } from "node:os";
import { parentPort, workerData } from "node:worker_threads";
import { hashSync, verifySync } from "@node-rs/argon2";

if (!parentPort) throw new Error("hash-worker.mjs runs as a worker thread");
const port = parentPort;

// Hashing yields the CPU to the event loop and the database: this thread runs at a lower
// priority (Linux: a thread's own nice value, set through its thread id), so a flood of sign-ins
// slows other RPCs less. Where that cannot be done, the thread keeps the process's priority.
const nice = workerData?.nice ?? 0;
if (nice > 0) {
  try {
    const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, nice);
  } catch {
    // Not Linux, or no /proc: same priority as the rest of the process.
  }
}

port.on("message", (job) => {
  let result;
  try {
    result =
      job.op === "hash"
        ? { id: job.id, value: hashSync(job.password, job.params) }
        : { id: job.id, value: verifySync(job.hash, job.password) };
  } catch (error) {
    // A malformed stored hash does not verify; anything else is reported.
    result = job.op === "verify" ? { id: job.id, value: false } : { id: job.id, error: String(error) };
  }
  port.postMessage(result);
});
