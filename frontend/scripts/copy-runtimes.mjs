// Self-hosts the pinned runtimes next to the build: ONNX Runtime Web (the wasm-only bundle, its glue
// module, the SIMD binary) and TF.js (core, converter for GraphModels, the wasm backend and its
// binaries). Nothing is loaded from a CDN at run time.
import { copyFileSync, mkdirSync } from "node:fs";

const out = "../component/streamlit_secure_context/frontend/runtimes";
const runtimes = {
  ort: ["onnxruntime-web/dist", ["ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"]],
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
};
for (const [name, [base, files]] of Object.entries(runtimes)) {
  mkdirSync(`${out}/${name}`, { recursive: true });
  for (const file of files) copyFileSync(`node_modules/${base}/${file}`, `${out}/${name}/${file.split("/").pop()}`);
}
