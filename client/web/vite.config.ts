import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The generated API code lives outside this package, in ../../gen/ts. It
// imports "@bufbuild/protobuf", which must resolve to this package's copy
// (the same instance @connectrpc/connect uses, or error details and the
// type registry would not match): hence the alias for @gen and the dedupe.
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

export default defineConfig({
  base: "/",
  resolve: {
    alias: { "@gen": here("../../gen/ts") },
    dedupe: ["@bufbuild/protobuf", "@connectrpc/connect", "@connectrpc/connect-web"],
  },
  server: {
    fs: { allow: [here("."), here("../../gen/ts")] },
  },
  build: {
    outDir: "dist",
    assetsDir: "assets",
    emptyOutDir: true,
    sourcemap: false,
    target: "es2022",
    // One small app: a single JS and CSS file, content-hashed names only,
    // no timestamps, so the committed dist is reproducible.
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
});
