// Self-hosts the pinned ONNX Runtime Web files next to the build: the wasm-only bundle, its glue
// module and the SIMD wasm binary. Nothing is loaded from a CDN at run time.
import { copyFileSync, mkdirSync } from "node:fs";

const source = "node_modules/onnxruntime-web/dist";
const target = "../component/streamlit_secure_context/frontend/runtimes/ort";
mkdirSync(target, { recursive: true });
for (const file of ["ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"]) {
  copyFileSync(`${source}/${file}`, `${target}/${file}`);
}
