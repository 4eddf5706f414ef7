import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createStaticFiles } from "../src/static.js";

describe("static console files (WEB_DIR)", () => {
  let dir: string;
  let server: Server;
  let base: string;
  before(async () => {
    const parent = mkdtempSync(join(tmpdir(), "trellis-static-"));
    dir = join(parent, "dist");
    mkdirSync(join(dir, "assets"), { recursive: true });
    writeFileSync(join(dir, "index.html"), "<!doctype html><title>console</title>");
    writeFileSync(join(dir, "assets", "app-1234.js"), "console.log(1)");
    writeFileSync(join(parent, "secret.txt"), "outside");
    const serve = createStaticFiles(dir);
    server = createServer((req, res) => {
      const path = (req.url ?? "/").split("?", 1)[0] ?? "/";
      serve(req, res, path).then((served) => {
        if (!served) res.writeHead(404).end("no route");
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.close();
    rmSync(join(dir, ".."), { recursive: true, force: true });
  });

  it("serves index.html at / and for client-side routes", async () => {
    for (const path of ["/", "/orders", "/billing/invoices"]) {
      const res = await fetch(base + path);
      assert.equal(res.status, 200, path);
      assert.match(res.headers.get("content-type") ?? "", /text\/html/);
      assert.match(await res.text(), /<title>console<\/title>/);
    }
  });

  it("serves hashed assets as immutable with their type", async () => {
    const res = await fetch(`${base}/assets/app-1234.js`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /javascript/);
    assert.match(res.headers.get("cache-control") ?? "", /immutable/);
  });

  it("never serves a file outside the directory", async () => {
    for (const path of [
      "/../secret.txt",
      "/%2e%2e/secret.txt",
      "/assets/..%2f..%2fsecret.txt",
      "/a%00b.js",
    ]) {
      const res = await fetch(base + path);
      assert.equal(res.status, 404, path);
      assert.doesNotMatch(await res.text(), /outside/);
    }
  });

  it("leaves unmatched API paths to the gateway's 404", async () => {
    for (const path of ["/v1/orders/", "/trellis.core.v1.CoreService/Nope", "/grpc.health.v1.Health/Nope"]) {
      assert.equal((await fetch(base + path)).status, 404, path);
    }
  });

  it("answers 404 for a missing file with an extension, and ignores other methods", async () => {
    assert.equal((await fetch(`${base}/assets/missing.js`)).status, 404);
    assert.equal((await fetch(`${base}/`, { method: "POST" })).status, 404);
  });
});
