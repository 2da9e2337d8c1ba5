// The component frame (served by Streamlit on the app's origin). It never touches patient data: it
// fetches the model and the self-hosted runtime, starts the sandboxed inference frame, forwards
// INIT/INFER, and hands the result (or a clear error) back to Python.
import {
  acceptMessage,
  decodeTensor,
  encodeTensor,
  fitShape,
  jsonProblem,
  litertGlue,
  message,
  parseNumbers,
  profileFromUrl,
  refuseFile,
  relaxedSimdSupported,
  runtimeKind,
  sandboxCsp,
  valuesToBytes,
  type RawTensor,
  type RuntimeKind,
  type SandboxProfile,
} from "./protocol";
import { bootstrap, workerSource } from "./sandbox";
import { onRender, setComponentValue, setFrameHeight, type RenderArgs } from "./streamlit";

const RUNTIMES = "./runtimes";
/** A performance mark for the cold-start probe (benchmarks/cold_start_probe.py reads them from a trace). */
const mark = (name: string) => performance.mark(`secure-context:${name}`);
const status = document.getElementById("status")!;
let modelKey = "";
let inputsKey = "";
let requestId = 0;
let rendered = false;
let timer: ReturnType<typeof setTimeout> | undefined;
/** A runtime as the opaque frame receives it: scripts for the worker, a module, wasm binaries (a Blob
 * holds a gzip-compressed binary as the wheel ships it: the worker inflates it). */
interface RuntimeBundle {
  kind: RuntimeKind;
  scripts: string[];
  glue?: string;
  /** The glue's file name (LiteRT.js's loader wants a URL ending in it). */
  glueName?: string;
  binaries: Record<string, ArrayBuffer | Blob>;
}
const runtimeFiles: Partial<Record<RuntimeKind, Promise<RuntimeBundle>>> = {};

/** A profile as one comparable value: a frame serves a model only if it was started for its profile. */
const profileKey = ({ kind, threads, sandboxOrigin }: SandboxProfile) => JSON.stringify([kind, threads, sandboxOrigin]);

/** The sandboxed inference frame with its runtime, started for one profile (runtime, threads, origin). */
interface Sandbox {
  frame: HTMLIFrameElement;
  profile: string;
  /** "*" for the opaque frame (its origin is "null"); the sandbox origin in isolated mode. */
  target: string;
  /** Settles once the frame has loaded and has been sent its runtime. */
  started: Promise<void>;
  /** A model was sent to it: a new model gets a new frame. */
  used: boolean;
  ready: boolean;
}
let sandbox: Sandbox | null = null;
let queued: Record<string, unknown> | null = null;
let queuedTransfer: Transferable[] = [];
/** A model path relative to the app (e.g. "app/static/m.onnx") resolved against the app's base URL. */
function appUrl(path: string): string {
  const base = window.location.href.split("/component/")[0] + "/";
  return new URL(path, base).href;
}

async function sha256Base64(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

async function fetchOk(url: string, what: string, init?: RequestInit): Promise<Response> {
  const response = await fetch(url, init);
  // 416 to a whole-file range (loadModel): there is no byte 0, the file is empty.
  if (response.status === 416) throw Object.assign(new Error(`the ${what} ${url} is empty`), { kind: "model" });
  if (!response.ok) {
    // Streamlit answers 404 for a missing static file and for one over its 200 MiB limit alike.
    const hint = response.status === 404 && what !== "runtime" ? " (missing, or over Streamlit's 200 MiB static file limit)" : "";
    throw Object.assign(new Error(`${what} ${url} answered HTTP ${response.status}${hint}`), { kind: what === "runtime" ? "runtime" : "model" });
  }
  // With static serving off, Streamlit answers app/static/ URLs with its own index page.
  if (what !== "runtime" && (response.headers.get("content-type") ?? "").startsWith("text/html")) {
    throw Object.assign(
      new Error(`${what} ${url} answered with an HTML page, not a model: is Streamlit's static serving on (server.enableStaticServing)?`),
      { kind: "model" },
    );
  }
  return response;
}

const text = (url: string) => fetchOk(url, "runtime").then((r) => r.text());
const bytes = (url: string) => fetchOk(url, "runtime").then((r) => r.arrayBuffer());
// A large binary stays a Blob: the frames and the worker pass a handle, not a copy of its bytes (the
// opaque frame runs in a process of its own, where a posted ArrayBuffer is copied).
const blob = (url: string) => fetchOk(url, "runtime").then((r) => r.blob());

/** The self-hosted runtime files for the opaque frame, fetched once from the component's own URL. */
function loadRuntime(kind: RuntimeKind): Promise<RuntimeBundle> {
  if (kind === "tfjs") {
    const base = `${RUNTIMES}/tfjs`;
    runtimeFiles.tfjs ??= Promise.all([
      text(`${base}/tf-core.min.js`),
      text(`${base}/tf-converter.min.js`),
      text(`${base}/tf-backend-wasm.min.js`),
      bytes(`${base}/tfjs-backend-wasm.wasm`),
      bytes(`${base}/tfjs-backend-wasm-simd.wasm`),
    ]).then(([core, converter, backend, wasm, simd]) => ({
      kind,
      scripts: [core, converter, backend],
      binaries: { "tfjs-backend-wasm.wasm": wasm, "tfjs-backend-wasm-simd.wasm": simd },
    }));
    return runtimeFiles.tfjs;
  }
  if (kind === "litert") {
    // Only the build this browser will run (each binary is ~9 MB): relaxed SIMD, else plain SIMD.
    const glueName = litertGlue(relaxedSimdSupported());
    const base = `${RUNTIMES}/litert`;
    runtimeFiles.litert ??= Promise.all([
      text(`${base}/litert.iife.js`),
      text(`${base}/${glueName}`),
      bytes(`${base}/${glueName.replace(/\.js$/, ".wasm")}`),
    ]).then(([litert, glue, wasm]) => ({ kind, scripts: [litert], glue, glueName, binaries: { wasm } }));
    return runtimeFiles.litert;
  }
  const base = `${RUNTIMES}/ort`;
  runtimeFiles.ort ??= Promise.all([
    text(`${base}/ort.wasm.min.js`),
    text(`${base}/ort-wasm-simd-threaded.mjs`),
    // Compressed at build time: the app's server would otherwise gzip the 14 MB binary on every load.
    blob(`${base}/ort-wasm-simd-threaded.wasm.gz`),
  ]).then(([ort, glue, wasm]) => ({ kind, scripts: [ort], glue, binaries: { wasm } }));
  return runtimeFiles.ort;
}

/** The model: an .onnx or .tflite file, or a TF.js GraphModel (model.json and its weight files, concatenated). */
async function loadModel(url: string, kind: RuntimeKind): Promise<{ model: ArrayBuffer | Blob; modelJson?: unknown }> {
  // The whole file as a range: a request with a Range header asks for no content coding (the fetch
  // standard adds Accept-Encoding: identity), so the app's server sends the file as it is instead of
  // gzipping it on every load (Streamlit: ~0.14 s of its CPU for a 4 MB model that gzip shrinks by 7%).
  const response = await fetchOk(url, "model", { headers: { Range: "bytes=0-" } });
  if (kind !== "tfjs") return { model: await response.blob() };
  let modelJson: { weightsManifest?: { paths: string[] }[] };
  try {
    modelJson = await response.json();
  } catch {
    throw Object.assign(new Error(`the model ${url} is not a TF.js model.json`), { kind: "model" });
  }
  const paths = (modelJson.weightsManifest ?? []).flatMap((group) => group.paths);
  const shards = await Promise.all(paths.map((path) => fetchOk(new URL(path, url).href, "model weights").then((r) => r.arrayBuffer())));
  const model = new Uint8Array(shards.reduce((n, s) => n + s.byteLength, 0));
  let offset = 0;
  for (const shard of shards) {
    model.set(new Uint8Array(shard), offset);
    offset += shard.byteLength;
  }
  return { model: model.buffer, modelJson };
}

/** Hands a value to Python. The timer is cleared only once the value is on its way: a value that
 * cannot go as JSON (a BigInt, NaN, a typed array) becomes an error now instead of a silent hang. */
function report(value: Record<string, unknown>): void {
  const problem = jsonProblem(value);
  if (problem) {
    fail("worker", `the answer could not be sent to Python: it held ${problem}`);
    return;
  }
  try {
    setComponentValue(value);
  } catch {
    fail("worker", "the answer could not be sent to Python");
    return;
  }
  clearTimeout(timer);
}

function fail(kind: string, text: string): void {
  status.textContent = `Error: ${text}`;
  clearTimeout(timer);
  // Fixed kinds only: an unknown one is the worker's.
  const known = ["timeout", "model", "input", "worker", "file", "runtime", "output"].includes(kind) ? kind : "worker";
  setComponentValue({ status: "error", kind: known, message: text, requestId });
}

function armTimeout(ms: number): void {
  clearTimeout(timer);
  timer = setTimeout(() => {
    tearDown();
    fail("timeout", `no answer from the inference worker within ${ms} ms`);
  }, ms);
}

function tearDown(): void {
  sandbox?.frame.remove();
  sandbox = null;
  queued = null;
  modelKey = "";
}

/** The opaque frame's bootstrap: the same text on every page, so its CSP hash is computed once. */
let opaqueBootstrap: Promise<{ script: string; csp: string }> | null = null;
function opaqueFrameSource(): Promise<{ script: string; csp: string }> {
  opaqueBootstrap ??= (async () => {
    const config = { parentOrigin: window.location.origin, workerSource: workerSource() };
    const script =
      [acceptMessage, message, parseNumbers, fitShape, refuseFile, valuesToBytes].map((f) => f.toString()).join("\n") +
      `\n(${bootstrap.toString()})(${JSON.stringify(config)});`;
    return { script, csp: sandboxCsp(await sha256Base64(script)) };
  })();
  return opaqueBootstrap;
}

/** Makes the sandboxed frame and starts its runtime: the frame, the runtime's files and the worker's
 * start proceed while the model is still unknown or on its way (cold start). */
function openSandbox(profile: SandboxProfile): Sandbox {
  const { kind, threads, sandboxOrigin } = profile;
  const frame = document.createElement("iframe");
  frame.title = "secure inference sandbox";
  frame.style.cssText = "border:0;width:100%;height:60px";
  const opened: Sandbox = {
    frame,
    profile: profileKey(profile),
    target: sandboxOrigin || "*",
    started: Promise.resolve(),
    used: false,
    ready: false,
  };
  opened.started = (async () => {
    let files: Promise<RuntimeBundle> | null = null;
    if (sandboxOrigin) {
      // Isolated mode: a frame on the sandbox origin (served with COEP/CORP and a strict CSP by the
      // edge), allowed cross-origin isolation: ONNX Runtime Web runs threads there. It fetches its
      // runtime from its own origin.
      frame.setAttribute("sandbox", "allow-scripts allow-same-origin");
      frame.allow = "cross-origin-isolated";
      frame.src = `${sandboxOrigin}/sandbox.html#${encodeURIComponent(JSON.stringify({ parentOrigin: window.location.origin }))}`;
    } else {
      // An opaque origin: no cookies, no storage, no network, no access to the app's page.
      files = loadRuntime(kind).then((r) => (mark("runtime-fetched"), r));
      const { script, csp } = await opaqueFrameSource();
      frame.setAttribute("sandbox", "allow-scripts");
      frame.srcdoc =
        `<!doctype html><html><head><meta http-equiv="Content-Security-Policy" content="${csp}">` +
        `</head><body style="font-family:sans-serif"><script>${script}</script></body></html>`;
    }
    const loaded = new Promise((resolve) => frame.addEventListener("load", resolve, { once: true }));
    document.body.appendChild(frame);
    await loaded;
    mark("frame-loaded");
    if (!files) {
      post(opened, "RUNTIME", { kind, threads });
      return;
    }
    // The runtime's binaries are copies: the component keeps its own for the next frame.
    const { scripts, glue, glueName, binaries } = await files;
    const copies = Object.fromEntries(
      Object.entries(binaries).map(([name, b]) => [name, b instanceof ArrayBuffer ? b.slice(0) : b]),
    );
    post(opened, "RUNTIME", { kind, threads, scripts, glue, glueName, binaries: copies }, buffers(Object.values(copies)));
  })();
  // A failure here is reported when the model is sent (start awaits it).
  opened.started.catch(() => undefined);
  return opened;
}

/** ArrayBuffers are transferred, not copied; Blobs go as handles. */
const buffers = (values: unknown[]) => values.filter((b): b is ArrayBuffer => b instanceof ArrayBuffer);

function post(to: Sandbox, type: "RUNTIME" | "SETTINGS" | "INIT" | "INFER", payload: Record<string, unknown>, transfer: Transferable[] = []): void {
  requestId += 1;
  // The opaque frame's origin is "null": a window reference is the only way to address it. What
  // goes in is the model and runtime; what comes out is checked by event.source.
  to.frame.contentWindow!.postMessage(message(type, requestId, payload), to.target, transfer);
}

let timeoutMs = 30_000;
function send(type: "INIT" | "INFER", payload: Record<string, unknown>, transfer: Transferable[] = []): void {
  armTimeout(timeoutMs);
  post(sandbox!, type, payload, transfer);
}

function onSandboxMessage(event: MessageEvent): void {
  const accepted = acceptMessage(event, sandbox?.frame.contentWindow ?? null);
  if (!accepted || !sandbox) return;
  if (sandbox.target !== "*" && event.origin !== sandbox.target) return;
  const payload = accepted.payload as Record<string, unknown>;
  try {
    if (accepted.type === "INIT_DONE") {
      mark("init-done");
      sandbox.ready = true;
      status.textContent = "Model loaded in the sandbox.";
      if (queued) {
        send("INFER", queued, queuedTransfer);
        queued = null;
      } else {
        report({ status: "ready", ...payload });
      }
    } else if (accepted.type === "RESULT") {
      mark("result");
      status.textContent = "Inference done.";
      const { outputs, ...rest } = payload;
      const encoded =
        outputs === undefined
          ? undefined
          : Object.fromEntries(Object.entries(outputs as Record<string, RawTensor>).map(([name, t]) => [name, encodeTensor(t)]));
      report({ status: "ok", requestId: accepted.requestId, ...rest, ...(encoded ? { outputs: encoded } : {}) });
    } else if (accepted.type === "ERROR") {
      // Before the first render nothing waits for an answer: the render starts a fresh sandbox. After
      // it, the frame stays (a bad file or input is reported, and the next one is scored).
      if (rendered) fail(String(payload.kind ?? "worker"), String(payload.message));
      else tearDown();
    }
  } catch {
    fail("worker", "the sandbox's answer could not be read");
  }
}

async function start(args: RenderArgs): Promise<void> {
  const security = (args.security_config ?? {}) as Record<string, unknown>;
  const params = (args.inference_params ?? {}) as Record<string, unknown>;
  const picker = args.file_picker as { accept: string[]; max_bytes: number; label: string; image?: unknown } | null;
  timeoutMs = Number(args.timeout_ms ?? 30_000);
  const postprocess = args.postprocess ?? null;
  const key = JSON.stringify([args.model_url, security, picker, params.input_name, params.shape, params.dtype, params.backend, postprocess]);
  const inputs = params.inputs ?? null;
  if (key !== modelKey) {
    mark("render");
    const sandboxOrigin = String(security.sandbox_origin ?? "").replace(/\/$/, "");
    const profile: SandboxProfile = {
      kind: runtimeKind(String(args.model_url), String(params.backend ?? "wasm"), sandboxOrigin),
      threads: Number(security.threads ?? (sandboxOrigin ? 2 : 1)),
      sandboxOrigin,
    };
    // The frame started from the URL's profile serves the first model; anything else gets a new one.
    if (!sandbox || sandbox.used || sandbox.profile !== profileKey(profile)) {
      tearDown();
      sandbox = openSandbox(profile);
    }
    const current = sandbox;
    current.used = true;
    modelKey = key;
    inputsKey = "";
    status.textContent = "Loading the model in the sandbox...";
    armTimeout(timeoutMs);
    const settings = {
      filePicker: picker ? { accept: picker.accept, maxBytes: picker.max_bytes, label: picker.label, image: picker.image ?? null } : null,
      inputName: (params.input_name as string | undefined) ?? null,
      shape: (params.shape as number[] | undefined) ?? [1, -1],
      dtype: (params.dtype as string | undefined) ?? "float32",
      postprocess,
    };
    // The picker is shown as soon as the frame is up, disabled until the model is loaded.
    current.started.then(() => sandbox === current && post(current, "SETTINGS", { settings })).catch(() => undefined);
    let loaded: { model: ArrayBuffer | Blob; modelJson?: unknown };
    try {
      [loaded] = await Promise.all([
        loadModel(appUrl(String(args.model_url)), profile.kind).then((m) => (mark("model-fetched"), m)),
        current.started,
      ]);
    } catch (error) {
      if (sandbox !== current) return; // torn down (a timeout, already reported) or replaced meanwhile
      throw error;
    }
    if (sandbox !== current) return; // a newer render replaced this frame meanwhile
    const { model, modelJson } = loaded;
    mark("init-sent");
    send("INIT", { model, modelJson, settings }, buffers([model]));
  }
  const nextInputs = JSON.stringify([inputs, params.probe_url, params.synthetic]);
  if (nextInputs !== inputsKey && (inputs !== null || params.probe_url || params.synthetic)) {
    inputsKey = nextInputs;
    let payload: Record<string, unknown>;
    let transfer: Transferable[] = [];
    if (params.probe_url) payload = { probeUrl: params.probe_url };
    else if (params.synthetic) payload = { synthetic: params.synthetic };
    else {
      if (!Array.isArray(inputs)) throw Object.assign(new Error("inputs must come from Python's encode_inputs"), { kind: "input" });
      const tensors = inputs.map((t, i) => decodeTensor(t, i + 1));
      payload = { inputs: tensors };
      transfer = tensors.map((t) => t.data);
    }
    if (sandbox?.ready) send("INFER", payload, transfer);
    else {
      queued = payload;
      queuedTransfer = transfer;
    }
  }
}

window.addEventListener("message", onSandboxMessage);
// Streamlit sends the arguments only after this frame has loaded and said it is ready; the sandbox
// profile in this frame's URL lets the sandbox and its runtime start now.
const declared = profileFromUrl(window.location.pathname);
if (declared) {
  mark("prestart");
  sandbox = openSandbox(declared);
}

onRender((args) => {
  rendered = true;
  setFrameHeight(args.file_picker ? 110 : 40);
  start(args).catch((error: Error & { kind?: string }) => {
    tearDown();
    fail(error.kind ?? "runtime", error.message);
  });
});
