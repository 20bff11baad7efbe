#!/usr/bin/env node
// Bundles browser/page.mjs (with connect-web, protobuf-es and the generated code) into one
// script for the test page, with esbuild. Run by the Rust tests before they serve the page, so
// the bundle is never stale.
//
//   node tests/clients/bundle.mjs OUTFILE
//
// Prints {"bundle": OUTFILE, "bytes": N}; exit status 0, or 1 with esbuild's errors on stderr.

import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const outfile = process.argv[2];
if (!outfile) {
  process.stderr.write("usage: bundle.mjs OUTFILE\n");
  process.exit(2);
}
try {
  const result = await build({
    entryPoints: [fileURLToPath(new URL("browser/page.mjs", import.meta.url))],
    bundle: true,
    format: "iife",
    platform: "browser",
    target: "chrome120",
    outfile,
    metafile: true,
    logLevel: "error",
  });
  const bytes = Object.values(result.metafile.outputs).reduce((sum, output) => sum + output.bytes, 0);
  process.stdout.write(`${JSON.stringify({ bundle: outfile, bytes })}\n`);
} catch {
  process.exit(1);
}
