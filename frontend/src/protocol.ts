// Messages between the component frame (parent) and its sandboxed inference frame, and the checks
// both sides apply. Pure functions: unit-tested with vitest.

// Every function here is self-contained (no module-level references): the sandbox receives them as
// source text.
// RUNTIME starts the runtime (before the model is known); INIT loads the model into it.
export type MessageType = "RUNTIME" | "INIT" | "INIT_DONE" | "INFER" | "RESULT" | "ERROR";

export interface SandboxMessage {
  channel: "streamlit-secure-context";
  type: MessageType;
  requestId: number;
  payload?: unknown;
}

/** The runtime for a model: ONNX Runtime Web (its wasm build, or its WebGPU build), TF.js (GraphModel)
 * or LiteRT.js (.tflite). */
export type RuntimeKind = "ort" | "ort-webgpu" | "tfjs" | "litert";

export type ErrorKind = "timeout" | "model" | "input" | "worker" | "file" | "runtime";

export interface TensorResult {
  dims: number[];
  data: number[];
}

/** A message from the expected window with the expected shape, else null (ignored). */
export function acceptMessage(
  event: { source: unknown; data: unknown },
  expectedSource: unknown,
): SandboxMessage | null {
  if (expectedSource === null || event.source !== expectedSource) return null;
  const data = event.data as Partial<SandboxMessage> | null;
  if (typeof data !== "object" || data === null) return null;
  if (data.channel !== "streamlit-secure-context") return null;
  if (!["RUNTIME", "INIT", "INIT_DONE", "INFER", "RESULT", "ERROR"].includes(data.type as string)) return null;
  if (typeof data.requestId !== "number" || !Number.isInteger(data.requestId)) return null;
  return data as SandboxMessage;
}

export function message(type: MessageType, requestId: number, payload?: unknown): SandboxMessage {
  return { channel: "streamlit-secure-context", type, requestId, payload };
}

/** The CSP of the inference frame: only its own inline bootstrap (by hash), blob workers, wasm. */
export function sandboxCsp(bootstrapHash: string): string {
  return [
    "default-src 'none'",
    `script-src 'sha256-${bootstrapHash}' blob: 'wasm-unsafe-eval'`,
    "worker-src blob:",
    // blob: only: the TF.js wasm backend fetches its binary from a blob URL this frame made itself.
    "connect-src blob:",
    "style-src 'unsafe-inline'",
    "img-src 'none'",
    "form-action 'none'",
    "base-uri 'none'",
  ].join("; ");
}

export interface FileRules {
  accept: string[];
  maxBytes: number;
}

/** Why a picked file is refused, or null when it may be read. */
export function refuseFile(file: { name: string; size: number }, rules: FileRules): string | null {
  if (file.size > rules.maxBytes) {
    return `${file.name} is ${file.size} bytes; the limit is ${rules.maxBytes} bytes`;
  }
  const lower = file.name.toLowerCase();
  if (rules.accept.length > 0 && !rules.accept.some((ext) => lower.endsWith(ext.toLowerCase()))) {
    return `${file.name} is not one of the accepted types (${rules.accept.join(", ")})`;
  }
  return null;
}

/** Numbers from CSV or whitespace-separated text; an error names the first bad token. */
export function parseNumbers(text: string): number[] {
  const tokens = text.split(/[\s,;]+/).filter((t) => t.length > 0);
  return tokens.map((token, index) => {
    const value = Number(token);
    if (!Number.isFinite(value)) throw new Error(`value ${index + 1} (${token.slice(0, 20)}) is not a number`);
    return value;
  });
}

/** Checks that data fits the shape (-1 once for a free dimension) and returns the concrete shape. */
export function fitShape(length: number, shape: number[]): number[] {
  const free = shape.filter((d) => d === -1).length;
  if (free > 1 || shape.some((d) => d === 0 || d < -1 || !Number.isInteger(d))) {
    throw new Error(`shape [${shape.join(", ")}] is not valid`);
  }
  const known = shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  if (free === 1) {
    if (length % known !== 0) throw new Error(`${length} values do not fit shape [${shape.join(", ")}]`);
    return shape.map((d) => (d === -1 ? length / known : d));
  }
  if (known !== length) throw new Error(`${length} values do not fit shape [${shape.join(", ")}]`);
  return shape;
}

/** The runtime a model URL needs, by its file name (query and fragment ignored). WebGPU is asked for
 * with `backend: "webgpu"`; it is used for ONNX models on a sandbox origin only: the opaque frame's
 * blob worker is not a secure context, so it has no navigator.gpu (Python applies the same rule). */
export function runtimeKind(modelUrl: string, backend = "wasm", sandboxOrigin = ""): RuntimeKind {
  const path = modelUrl.split(/[?#]/)[0].toLowerCase();
  if (path.endsWith(".json")) return "tfjs";
  if (path.endsWith(".tflite")) return "litert";
  return backend === "webgpu" && sandboxOrigin ? "ort-webgpu" : "ort";
}

/** The sandbox set-up a component frame was declared for: its runtime, thread count and sandbox origin
 * ("" for the opaque frame). */
export interface SandboxProfile {
  kind: RuntimeKind;
  threads: number;
  sandboxOrigin: string;
}

/** The profile in a component frame's URL path (Python's sandbox_profile names the component
 * `sandbox_<kind>_<threads>_<origin as hex>`), or null when the path carries none or a bad one. */
export function profileFromUrl(pathname: string): SandboxProfile | null {
  const match = /\.sandbox_(ort|ort-webgpu|tfjs|litert)_([1-9][0-9]?)_((?:[0-9a-f]{2})*)\/[^/]*$/.exec(pathname);
  if (!match) return null;
  const origin = match[3].replace(/../g, (hex) => String.fromCharCode(parseInt(hex, 16)));
  if (origin && !/^https?:\/\/[A-Za-z0-9.-]+(:[0-9]{1,5})?$/.test(origin)) return null;
  return { kind: match[1] as RuntimeKind, threads: Number(match[2]), sandboxOrigin: origin };
}

/** Whether this browser validates a relaxed-SIMD module (the same probe LiteRT.js uses to choose its
 * build): the opaque frame is sent only the one LiteRT.js binary it will run. */
export function relaxedSimdSupported(): boolean {
  // (func (result v128) i32.const 1 i8x16.splat i32.const 2 i8x16.splat i8x16.relaxed_swizzle)
  const probe = [
    0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 1, 253, 15, 65, 2, 253, 15,
    253, 128, 2, 11,
  ];
  return WebAssembly.validate(new Uint8Array(probe));
}

/** The LiteRT.js glue script for a browser: the relaxed-SIMD build, else the plain-SIMD "compat" one. */
export function litertGlue(relaxedSimd: boolean): string {
  return relaxedSimd ? "litert_wasm_internal.js" : "litert_wasm_compat_internal.js";
}
