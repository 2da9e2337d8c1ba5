// Self-hosts the pinned runtimes next to the build: ONNX Runtime Web (the wasm-only bundle, its glue
// module, the SIMD binary; the WebGPU bundle with its binary), TF.js (core, converter for GraphModels, the wasm backend and its
// binaries) and LiteRT.js for .tflite models. Nothing is loaded from a CDN at run time.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { constants, gzipSync } from "node:zlib";
import { build } from "vite";

const out = "../component/streamlit_secure_context/frontend/runtimes";
const runtimes = {
  ort: [
    "onnxruntime-web/dist",
    [
      "ort.wasm.min.js",
      "ort-wasm-simd-threaded.mjs",
      "ort-wasm-simd-threaded.wasm",
      // The WebGPU bundle and its (asyncify) build, served by the sandbox origin only (WebGPU needs a
      // secure-context worker, which the opaque frame cannot have).
      "ort.webgpu.min.js",
      "ort-wasm-simd-threaded.asyncify.mjs",
      "ort-wasm-simd-threaded.asyncify.wasm",
    ],
  ],
  tfjs: [
    "@tensorflow",
    [
      "tfjs-core/dist/tf-core.min.js",
      "tfjs-converter/dist/tf-converter.min.js",
      "tfjs-backend-wasm/dist/tf-backend-wasm.min.js",
      "tfjs-backend-wasm/wasm-out/tfjs-backend-wasm.wasm",
      "tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-simd.wasm",
    ],
  ],
  // The single-threaded XNNPack CPU builds: relaxed SIMD (Chromium, Firefox) and "compat" (plain SIMD,
  // for browsers without relaxed SIMD), and the threaded one. Not shipped: the JSPI build (only for
  // WebNN and WebGPU partitioning, which the sandbox does not use).
  litert: [
    "@litertjs/core/wasm",
    [
      "litert_wasm_internal.js",
      "litert_wasm_internal.wasm",
      "litert_wasm_compat_internal.js",
      "litert_wasm_compat_internal.wasm",
      // Served by the sandbox origin only: threads need cross-origin isolation.
      "litert_wasm_threaded_internal.js",
      "litert_wasm_threaded_internal.wasm",
    ],
  ],
};
for (const [name, [base, files]] of Object.entries(runtimes)) {
  mkdirSync(`${out}/${name}`, { recursive: true });
  for (const file of files) copyFileSync(`node_modules/${base}/${file}`, `${out}/${name}/${file.split("/").pop()}`);
}

// The opaque frame's copy of ORT's binary, gzip-compressed once here (14.2 -> 3.7 MB): served as is
// (application/gzip), where the app's server would gzip the plain file again on every page load (about
// 0.35 s of its CPU); the worker inflates it with DecompressionStream. Isolated mode keeps the plain
// file: the worker there compiles it while it streams from the sandbox origin.
for (const file of ["ort/ort-wasm-simd-threaded.wasm"]) {
  writeFileSync(`${out}/${file}.gz`, gzipSync(readFileSync(`${out}/${file}`), { level: constants.Z_BEST_COMPRESSION }));
}

// @litertjs/core ships only an ES module with a bare import; the worker is a classic script (a blob
// worker in the opaque frame), so it gets one script that sets the global `litert`.
await build({
  configFile: false,
  logLevel: "warn",
  build: {
    outDir: `${out}/litert`,
    emptyOutDir: false,
    target: "es2022",
    minify: true,
    lib: { entry: "node_modules/@litertjs/core/dist/index.js", name: "litert", formats: ["iife"], fileName: () => "litert.iife.js" },
  },
});
