import { defineConfig } from "vite";

// In development the console runs on Vite's server and the gateway elsewhere: every RPC path
// (/trellis.<pkg>.<Service>/<Method>) is proxied there, so the browser still sees one origin.
const gateway = process.env.TRELLIS_GATEWAY_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  server: {
    port: 5173,
    proxy: {
      "^/trellis\\.": { target: gateway, changeOrigin: false },
      "/.well-known": { target: gateway },
    },
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
  },
});
