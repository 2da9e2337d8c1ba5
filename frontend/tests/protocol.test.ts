import { describe, expect, it } from "vitest";
import { supportsFeature } from "@litertjs/core";
import {
  acceptMessage,
  decodeTensor,
  encodeTensor,
  fitShape,
  fromBase64,
  jsonProblem,
  toBase64,
  valuesToBytes,
  topClasses,
  cropRect,
  resampleBilinear,
  litertGlue,
  message,
  parseNumbers,
  refuseFile,
  relaxedSimdSupported,
  profileFromUrl,
  runtimeKind,
  sandboxCsp,
} from "../src/protocol";

describe("acceptMessage", () => {
  const frame = {};
  const good = message("RESULT", 3, { outputs: {} });

  it("accepts a well-formed message from the expected window", () => {
    expect(acceptMessage({ source: frame, data: good }, frame)).toEqual(good);
  });

  it.each([
    ["another window", { source: {}, data: good }],
    ["no data", { source: frame, data: null }],
    ["another channel", { source: frame, data: { ...good, channel: "other" } }],
    ["an unknown type", { source: frame, data: { ...good, type: "EVAL" } }],
    ["a non-integer request id", { source: frame, data: { ...good, requestId: 1.5 } }],
    ["a string", { source: frame, data: "RESULT" }],
  ])("ignores %s", (_, event) => {
    expect(acceptMessage(event, frame)).toBeNull();
  });

  it("ignores everything when no frame is expected", () => {
    expect(acceptMessage({ source: null, data: good }, null)).toBeNull();
  });
});

describe("sandboxCsp", () => {
  const csp = sandboxCsp("abc=");
  it("allows only the hashed bootstrap, blob workers and wasm", () => {
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'sha256-abc=' blob: 'wasm-unsafe-eval'");
    expect(csp).toContain("connect-src blob:");
    expect(csp).not.toContain(" 'unsafe-eval'");
  });
});

describe("refuseFile", () => {
  const rules = { accept: [".csv", ".txt"], maxBytes: 100 };
  it("accepts a small file of an accepted type", () => {
    expect(refuseFile({ name: "Record.CSV", size: 100 }, rules)).toBeNull();
  });
  it("refuses a file over the limit", () => {
    expect(refuseFile({ name: "a.csv", size: 101 }, rules)).toMatch(/limit is 100 bytes/);
  });
  it("refuses another type", () => {
    expect(refuseFile({ name: "a.exe", size: 1 }, rules)).toMatch(/does not end in one of the accepted types/);
  });
  it("never quotes the file's name (it can be a patient's)", () => {
    const name = "Doe_Jane_1961-02-03_labs";
    expect(refuseFile({ name: `${name}.csv`, size: 101 }, rules)).not.toContain("Doe");
    expect(refuseFile({ name: `${name}.exe`, size: 1 }, rules)).not.toContain("Doe");
  });
});

describe("parseNumbers", () => {
  it("reads CSV and whitespace", () => {
    expect(parseNumbers("1, 2.5;-3\n4e1")).toEqual([1, 2.5, -3, 40]);
  });
  it("gives the first bad value's position, never its text", () => {
    expect(() => parseNumbers("1,x,3")).toThrow(/^value 2 is not a number$/);
    expect(() => parseNumbers("Doe^Jane^1961-02-03,1")).toThrow(/^value 1 is not a number$/);
  });
});

describe("tensor transport", () => {
  it("round-trips bytes through base64, large ones too", () => {
    const bytes = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 7) % 256);
    const back = fromBase64(toBase64(bytes));
    expect(back.length).toBe(bytes.length);
    expect(back.every((b, i) => b === bytes[i])).toBe(true);
  });
  it("keeps every bit of an int64 and NaN/Infinity of a float32", () => {
    const ints = BigInt64Array.from([2n ** 62n + 1n, -(2n ** 63n)]);
    const wire = encodeTensor({ dims: [2], dtype: "int64", data: ints.buffer });
    expect(Array.from(new BigInt64Array(decodeTensor(wire, 1).data))).toEqual([2n ** 62n + 1n, -(2n ** 63n)]);
    const floats = Float32Array.from([NaN, Infinity, -Infinity, 1.5]);
    const back = new Float32Array(decodeTensor(encodeTensor({ dims: [4], dtype: "float32", data: floats.buffer }), 1).data);
    expect(Array.from(back)).toEqual([NaN, Infinity, -Infinity, 1.5]);
  });
  it.each([
    ["an unknown dtype", { dims: [1], dtype: "complex64", b64: "AAAAAA==" }, "input 2 has an unknown dtype"],
    ["dims that are not sizes", { dims: [-1], dtype: "float32", b64: "AAAAAA==" }, "input 2 has invalid dims"],
    ["a byte count off its dims", { dims: [2], dtype: "float32", b64: "AAAAAA==" }, "input 2 holds 4 bytes; its dims and dtype need 8"],
  ])("refuses %s by position", (_, wire, expected) => {
    expect(() => decodeTensor(wire, 2)).toThrow(expected);
  });
});

describe("jsonProblem", () => {
  it.each([
    ["a BigInt", { outputs: { y: { data: [1n] } } }, "a 64-bit integer (BigInt)"],
    ["NaN (JSON.stringify would make it null)", { data: [NaN] }, "a number that is NaN or infinite"],
    ["Infinity", { inferenceMs: Infinity }, "a number that is NaN or infinite"],
    ["a typed array", { data: new Float32Array(1) }, "binary data"],
    ["undefined", { data: [undefined] }, "a value of type undefined"],
  ])("finds %s", (_, value, expected) => {
    expect(jsonProblem(value)).toBe(expected);
  });
  it("passes what JSON carries faithfully", () => {
    expect(jsonProblem({ status: "ok", outputs: { y: { dims: [1], dtype: "int64", b64: "AQ==" } }, ms: [1.5] })).toBeNull();
  });
});

describe("valuesToBytes", () => {
  it("makes float16 bits as numpy does (round to nearest even, subnormals, overflow)", () => {
    // numpy: np.array([1, -2.5, 65504, 1e5, 6e-8, 0.1, 1/3], np.float16).view(np.uint16)
    const bits = new Uint16Array(valuesToBytes([1, -2.5, 65504, 1e5, 6e-8, 0.1, 1 / 3], "float16"));
    expect(Array.from(bits)).toEqual([15360, 49408, 31743, 31744, 1, 11878, 13653]);
  });
  it("makes int64 and bool tensors from integers", () => {
    expect(Array.from(new BigInt64Array(valuesToBytes([3, -4], "int64")))).toEqual([3n, -4n]);
    expect(Array.from(new Uint8Array(valuesToBytes([1, 0], "bool")))).toEqual([1, 0]);
  });
  it("refuses a value an integer type cannot hold, by position", () => {
    expect(() => valuesToBytes([1, 2.5], "int32")).toThrow(/^value 2 is not a int32 value$/);
    expect(() => valuesToBytes([256], "uint8")).toThrow(/^value 1 is not a uint8 value$/);
  });
});

describe("fitShape", () => {
  it("fills one free dimension", () => {
    expect(fitShape(8, [-1, 4])).toEqual([2, 4]);
  });
  it("checks a fixed shape", () => {
    expect(fitShape(4, [1, 4])).toEqual([1, 4]);
    expect(() => fitShape(5, [1, 4])).toThrow("5 values do not fit shape [1, 4]");
  });
  it("refuses two free dimensions", () => {
    expect(() => fitShape(4, [-1, -1])).toThrow("not valid");
  });
});

describe("runtimeKind", () => {
  it.each([
    ["app/static/mlp.onnx", "ort"],
    ["app/static/mlp-tfjs/model.json", "tfjs"],
    ["app/static/mlp.tflite", "litert"],
    ["app/static/MLP.TFLITE?v=2", "litert"],
    ["app/static/mlp.tflite#frag", "litert"],
    ["app/static/model.json?name=x.tflite", "tfjs"],
    ["app/static/mlp.tflite.onnx", "ort"],
  ])("%s runs on %s", (url, kind) => {
    expect(runtimeKind(url)).toBe(kind);
  });
  it("uses ONNX Runtime's WebGPU build only when asked, for an ONNX model, on a sandbox origin", () => {
    expect(runtimeKind("m.onnx", "webgpu", "https://edge:9443")).toBe("ort-webgpu");
    expect(runtimeKind("m.onnx", "webgpu", "")).toBe("ort");
    expect(runtimeKind("m.onnx", "wasm", "https://edge:9443")).toBe("ort");
    expect(runtimeKind("m.tflite", "webgpu", "https://edge:9443")).toBe("litert");
  });
});

describe("profileFromUrl", () => {
  const path = (name: string) => `/component/streamlit_secure_context.${name}/index.html`;
  const hex = (text: string) => Array.from(text, (c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join("");
  it("reads the opaque profile Python declares by default", () => {
    expect(profileFromUrl(path("sandbox_ort_1_"))).toEqual({ kind: "ort", threads: 1, sandboxOrigin: "" });
  });
  it("reads a sandbox origin from its hex form", () => {
    expect(profileFromUrl(path(`sandbox_litert_2_${hex("https://edge.example:9443")}`))).toEqual({
      kind: "litert",
      threads: 2,
      sandboxOrigin: "https://edge.example:9443",
    });
  });
  it("reads the WebGPU build's profile", () => {
    expect(profileFromUrl(path(`sandbox_ort-webgpu_2_${hex("https://e:1")}`))?.kind).toBe("ort-webgpu");
  });
  it.each([
    ["no profile", "/component/other.component/index.html"],
    ["an unknown runtime", path("sandbox_wasm_1_")],
    ["zero threads", path("sandbox_ort_0_")],
    ["odd hex", path("sandbox_ort_1_abc")],
    ["an origin with a path", path(`sandbox_ort_2_${hex("https://edge/x")}`)],
    ["a javascript: origin", path(`sandbox_ort_2_${hex("javascript:alert(1)")}`)],
  ])("refuses %s", (_, pathname) => {
    expect(profileFromUrl(pathname)).toBeNull();
  });
});

describe("LiteRT.js build choice", () => {
  it("detects relaxed SIMD exactly as LiteRT.js does (same probe, same answer)", async () => {
    expect(relaxedSimdSupported()).toBe(await supportsFeature("relaxedSimd"));
  });

  it("names a glue script that the build ships", () => {
    expect(litertGlue(true)).toBe("litert_wasm_internal.js");
    expect(litertGlue(false)).toBe("litert_wasm_compat_internal.js");
  });
});

describe("topClasses", () => {
  const spec = { output: null, softmax: false, topK: 2, labels: [], threshold: null, keepOutputs: false };

  it("gives the best classes first, ties by index", () => {
    expect(topClasses([0.1, 0.7, 0.2, 0.7], spec)).toEqual([
      { index: 1, label: null, score: 0.7 },
      { index: 3, label: null, score: 0.7 },
    ]);
  });

  it("applies softmax without overflow, labels and the threshold", () => {
    const got = topClasses([1000, 1001, 0], { ...spec, softmax: true, labels: ["a", "b", "c"], threshold: 0.5 });
    expect(got.map((c) => c.label)).toEqual(["b"]);
    expect(got[0].score).toBeCloseTo(Math.E / (1 + Math.E), 12);
  });

  it("never ranks NaN (the worker refuses such an output before)", () => {
    expect(topClasses([NaN, 0.2, 0.1], spec).map((c) => c.index)).toEqual([1, 2]);
  });

  it("takes outputs of any length (no spread of the values)", () => {
    const values = new Float32Array(300_000).fill(0);
    values[123_456] = 5;
    expect(topClasses(values, { ...spec, softmax: true, topK: 1 })[0].index).toBe(123_456);
  });

  it("refuses labels that do not match the output, with numbers only", () => {
    expect(() => topClasses([1, 2, 3], { ...spec, labels: ["a"] })).toThrow("postprocess has 1 labels for an output of 3 values");
  });
});

describe("cropRect and resampleBilinear", () => {
  it("cuts the centre of the model's aspect ratio", () => {
    expect(cropRect(24, 16, 16, 16, "center")).toEqual([4, 0, 16, 16]);
    expect(cropRect(10, 30, 10, 5, "center")).toEqual([0, 5, 10, 20]);
    expect(cropRect(24, 16, 16, 16, "none")).toEqual([0, 0, 24, 16]);
  });

  it("copies a region of the same size and interpolates between pixel centres", () => {
    const source = Float32Array.from([0, 1, 2, 3, 4, 5]);
    expect(Array.from(resampleBilinear(source, 3, [1, 0, 2, 2], 2, 2))).toEqual([1, 2, 4, 5]);
    // 1x2 -> 1x4: centres at -0.25, 0.25, 0.75, 1.25 of the source (clamped at the edges).
    expect(Array.from(resampleBilinear(Float32Array.from([0, 4]), 2, [0, 0, 2, 1], 1, 4))).toEqual([0, 1, 3, 4]);
  });
});
