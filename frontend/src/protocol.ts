// Messages between the component frame (parent) and its sandboxed inference frame, and the checks
// both sides apply. Pure functions: unit-tested with vitest.

// Every function here is self-contained (no module-level references): the sandbox receives them as
// source text.
// RUNTIME starts the runtime (before the model is known); INIT loads the model into it.
// SETTINGS tells the frame its file picker's rules before the model has arrived (shown, disabled).
export type MessageType = "RUNTIME" | "SETTINGS" | "INIT" | "INIT_DONE" | "INFER" | "RESULT" | "ERROR";

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

/** A tensor as it travels between Python and the component frame: its bytes, little-endian, in base64
 * (int64 keeps every bit, NaN and Infinity survive: JSON has neither BigInt nor NaN). */
export interface WireTensor {
  name?: string | null;
  dims: number[];
  dtype: string;
  b64: string;
}

/** A tensor inside the browser (frame and worker): its bytes as an ArrayBuffer. */
export interface RawTensor {
  name?: string | null;
  dims: number[];
  dtype: string;
  data: ArrayBuffer;
}

/** Bytes per element of the element types the component carries. */
export const DTYPE_BYTES: Record<string, number> = {
  float32: 4,
  float16: 2,
  float64: 8,
  int8: 1,
  int16: 2,
  int32: 4,
  int64: 8,
  uint8: 1,
  uint16: 2,
  uint32: 4,
  uint64: 8,
  bool: 1,
};

export function toBase64(bytes: Uint8Array): string {
  let text = "";
  // In slices: String.fromCharCode(...all) overflows the stack for large tensors.
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

export function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** A tensor from Python, checked (dtype known, byte count matching dims), as bytes. Its position
 * (1-based) names it in errors. */
export function decodeTensor(tensor: WireTensor, position: number): RawTensor {
  const size = DTYPE_BYTES[tensor.dtype];
  if (!size) throw Object.assign(new Error(`input ${position} has an unknown dtype`), { kind: "input" });
  if (!Array.isArray(tensor.dims) || tensor.dims.some((d) => !Number.isInteger(d) || d < 0)) {
    throw Object.assign(new Error(`input ${position} has invalid dims`), { kind: "input" });
  }
  const bytes = fromBase64(tensor.b64);
  const expected = tensor.dims.reduce((a, b) => a * b, 1) * size;
  if (bytes.length !== expected) {
    throw Object.assign(new Error(`input ${position} holds ${bytes.length} bytes; its dims and dtype need ${expected}`), {
      kind: "input",
    });
  }
  return { name: tensor.name ?? null, dims: tensor.dims, dtype: tensor.dtype, data: bytes.buffer as ArrayBuffer };
}

/** An output for Python: bytes to base64. */
export function encodeTensor(tensor: RawTensor): WireTensor {
  return { dims: tensor.dims, dtype: tensor.dtype, b64: toBase64(new Uint8Array(tensor.data)) };
}

/** Why a value cannot go to Python as JSON (JSON.stringify would throw on a BigInt and would turn NaN
 * and Infinity into null without a word), or null when it can. The reason is fixed text. */
export function jsonProblem(value: unknown): string | null {
  const seen = new Set<unknown>();
  const walk = (v: unknown): string | null => {
    if (v === null || typeof v === "string" || typeof v === "boolean") return null;
    if (typeof v === "number") return Number.isFinite(v) ? null : "a number that is NaN or infinite";
    if (typeof v === "bigint") return "a 64-bit integer (BigInt)";
    if (typeof v !== "object") return `a value of type ${typeof v}`;
    if (seen.has(v)) return "a cycle";
    seen.add(v);
    if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) return "binary data";
    for (const item of Array.isArray(v) ? v : Object.values(v as object)) {
      const problem = walk(item);
      if (problem) return problem;
    }
    seen.delete(v);
    return null;
  };
  return walk(value);
}

/** Values read from a picked file as one tensor's bytes. Integer types take integers within the type's
 * range only; errors give positions, never the values. */
export function valuesToBytes(values: number[], dtype: string): ArrayBuffer {
  const integer: Record<string, [number, number]> = {
    int8: [-128, 127],
    int16: [-32768, 32767],
    int32: [-2147483648, 2147483647],
    int64: [-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
    uint8: [0, 255],
    uint16: [0, 65535],
    uint32: [0, 4294967295],
    uint64: [0, Number.MAX_SAFE_INTEGER],
    bool: [0, 1],
  };
  const range = integer[dtype];
  if (range) {
    values.forEach((v, i) => {
      if (!Number.isInteger(v) || v < range[0] || v > range[1]) {
        throw Object.assign(new Error(`value ${i + 1} is not a ${dtype} value`), { kind: "input" });
      }
    });
  }
  switch (dtype) {
    case "float32":
      return Float32Array.from(values).buffer;
    case "float64":
      return Float64Array.from(values).buffer;
    case "float16": {
      const view = new DataView(new ArrayBuffer(values.length * 2));
      values.forEach((v, i) => view.setUint16(i * 2, float16Bits(v), true));
      return view.buffer;
    }
    case "int8":
      return Int8Array.from(values).buffer;
    case "int16":
      return Int16Array.from(values).buffer;
    case "int32":
      return Int32Array.from(values).buffer;
    case "int64":
      return BigInt64Array.from(values, (v) => BigInt(v)).buffer;
    case "uint8":
    case "bool":
      return Uint8Array.from(values).buffer;
    case "uint16":
      return Uint16Array.from(values).buffer;
    case "uint32":
      return Uint32Array.from(values).buffer;
    case "uint64":
      return BigUint64Array.from(values, (v) => BigInt(v)).buffer;
    default:
      throw Object.assign(new Error("the picked file's dtype is not supported"), { kind: "input" });
  }

  /** IEEE half precision, rounded to nearest even (what numpy's astype(float16) gives). */
  function float16Bits(value: number): number {
    const f32 = new Float32Array([value]);
    const x = new Uint32Array(f32.buffer)[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
    const e = exp - 127 + 15;
    if (e >= 0x1f) return sign | 0x7c00;
    if (e <= 0) {
      if (e < -10) return sign;
      mant |= 0x800000;
      const shift = 14 - e;
      let half = mant >>> shift;
      const rest = mant & ((1 << shift) - 1);
      const halfway = 1 << (shift - 1);
      if (rest > halfway || (rest === halfway && half & 1)) half += 1;
      return sign | half;
    }
    let half = (e << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    // A carry out of the mantissa moves into the exponent (up to infinity, 0x7c00): still correct.
    if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half += 1;
    return sign | half;
  }
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
  if (!["RUNTIME", "SETTINGS", "INIT", "INIT_DONE", "INFER", "RESULT", "ERROR"].includes(data.type as string)) return null;
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

/** Why a picked file is refused, or null when it may be read. The reason goes to Python: it is fixed
 * text and numbers, never the file's name (a name can be a patient's). The accepted endings are the
 * app's own (FilePicker.accept). */
export function refuseFile(file: { name: string; size: number }, rules: FileRules): string | null {
  if (file.size > rules.maxBytes) {
    return `the picked file is ${file.size} bytes; the limit is ${rules.maxBytes} bytes`;
  }
  const lower = file.name.toLowerCase();
  if (rules.accept.length > 0 && !rules.accept.some((ext) => lower.endsWith(ext.toLowerCase()))) {
    return `the picked file's name does not end in one of the accepted types (${rules.accept.join(", ")})`;
  }
  return null;
}

/** Numbers from CSV or whitespace-separated text. An error gives the bad token's position only: its
 * text is the file's content (a patient's name, say) and must not reach Python. */
export function parseNumbers(text: string): number[] {
  const tokens = text.split(/[\s,;]+/).filter((t) => t.length > 0);
  return tokens.map((token, index) => {
    const value = Number(token);
    if (!Number.isFinite(value)) throw new Error(`value ${index + 1} is not a number`);
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

/** Python's Postprocess, as the frame and worker receive it. */
export interface PostprocessSpec {
  output: string | null;
  softmax: boolean;
  topK: number;
  labels: string[];
  threshold: number | null;
  keepOutputs: boolean;
}

export interface ScoredClass {
  index: number;
  label: string | null;
  score: number;
}

/** The answer an app asked for instead of an output's values: softmax (optional), the top k, labels,
 * those at or above the threshold. Softmax subtracts the maximum first (no overflow on large logits). */
export function topClasses(values: ArrayLike<number>, spec: PostprocessSpec): ScoredClass[] {
  let scores = Array.from(values, Number);
  if (spec.labels.length > 0 && spec.labels.length !== scores.length) {
    throw Object.assign(new Error(`postprocess has ${spec.labels.length} labels for an output of ${scores.length} values`), {
      kind: "output",
    });
  }
  if (spec.softmax) {
    // A loop, not Math.max(...scores): spreading a large output overflows the stack.
    const max = scores.reduce((a, b) => (b > a ? b : a), -Infinity);
    const exps = scores.map((v) => Math.exp(v - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    scores = exps.map((e) => e / sum);
  }
  // One pass keeping the k best in order (an output can hold 10^5-10^6 values; sorting them all
  // cost more than sending them). Best first; ties by index, as numpy's stable argsort of the
  // negated scores: a later index enters only with a strictly higher score. NaN never enters.
  const best: number[] = [];
  for (let i = 0; i < scores.length; i++) {
    const score = scores[i];
    if (!(best.length < spec.topK || score > scores[best[best.length - 1]])) continue;
    if (Number.isNaN(score)) continue;
    let at = best.length;
    while (at > 0 && score > scores[best[at - 1]]) at--;
    best.splice(at, 0, i);
    if (best.length > spec.topK) best.pop();
  }
  return best
    .filter((i) => spec.threshold === null || scores[i] >= spec.threshold)
    .map((i) => ({ index: i, label: spec.labels.length > 0 ? spec.labels[i] : null, score: scores[i] }));
}

/** The source rectangle [x, y, width, height] of a picture cut to the model's aspect ratio around its
 * centre ("center"), or the whole picture ("none"). */
export function cropRect(width: number, height: number, outHeight: number, outWidth: number, crop: string): [number, number, number, number] {
  if (crop !== "center") return [0, 0, width, height];
  // Compared as products: no rounding for pictures that already have the model's aspect ratio.
  if (width * outHeight > height * outWidth) {
    const w = Math.round((height * outWidth) / outHeight);
    return [Math.floor((width - w) / 2), 0, w, height];
  }
  const h = Math.round((width * outHeight) / outWidth);
  return [0, Math.floor((height - h) / 2), width, h];
}

/** A region of a one-channel float picture resized to outHeight x outWidth, bilinear with pixel
 * centres at +0.5 (OpenCV's INTER_LINEAR, no antialiasing); of the same size it is copied as is. */
export function resampleBilinear(
  source: Float32Array,
  width: number,
  rect: [number, number, number, number],
  outHeight: number,
  outWidth: number,
): Float32Array {
  const [x0, y0, w, h] = rect;
  const out = new Float32Array(outHeight * outWidth);
  const at = (x: number, y: number) => source[(y0 + y) * width + x0 + x];
  for (let oy = 0; oy < outHeight; oy++) {
    const sy = Math.min(Math.max((oy + 0.5) * (h / outHeight) - 0.5, 0), h - 1);
    const ya = Math.floor(sy);
    const yb = Math.min(ya + 1, h - 1);
    const fy = sy - ya;
    for (let ox = 0; ox < outWidth; ox++) {
      const sx = Math.min(Math.max((ox + 0.5) * (w / outWidth) - 0.5, 0), w - 1);
      const xa = Math.floor(sx);
      const xb = Math.min(xa + 1, w - 1);
      const fx = sx - xa;
      const top = at(xa, ya) * (1 - fx) + at(xb, ya) * fx;
      const bottom = at(xa, yb) * (1 - fx) + at(xb, yb) * fx;
      out[oy * outWidth + ox] = top * (1 - fy) + bottom * fy;
    }
  }
  return out;
}
