// The isolated inference page, served by the edge's sandbox origin with COEP, CORP and a strict CSP
// (script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:). The component frames it with
// allow="cross-origin-isolated", so ONNX Runtime Web can run threads. The component's origin comes in
// the URL fragment (never sent to a server); everything else comes with the messages it accepts.
import { bootstrap, workerSource } from "./sandbox";

const settings = JSON.parse(decodeURIComponent(window.location.hash.slice(1)) || "{}");
if (typeof settings.parentOrigin !== "string" || !/^https?:\/\/[^/]+$/.test(settings.parentOrigin)) {
  document.body.textContent = "secure-context sandbox: no component origin given";
} else {
  bootstrap({
    parentOrigin: settings.parentOrigin,
    runtimeBase: new URL("./runtimes/", window.location.href).href,
    workerSource: workerSource(),
  });
}
