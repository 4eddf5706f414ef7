// `npm run bench -- <name>`: runs bench/<name>.ts, which prints ratios against a bare baseline
// measured in the same run and writes its results with their inputs to bench/results/<name>.json.
import { readdirSync } from "node:fs";

const available = readdirSync(new URL(".", import.meta.url))
  .filter((f) => f.endsWith(".ts") && f !== "run.ts" && !f.startsWith("lib"))
  .map((f) => f.slice(0, -3));
const names = process.argv.slice(2);
if (names.length === 0 || names.some((n) => !available.includes(n))) {
  console.error(`usage: npm run bench -- <${available.join("|")}> …`);
  process.exit(2);
}
for (const name of names) {
  await import(`./${name}.ts`);
}
