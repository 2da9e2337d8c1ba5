// Code that runs inside the sandboxed inference frame and its worker. It is shipped as source text:
// the parent puts the bootstrap inline in the frame's srcdoc (allowed by its hash) and the worker
// code into a blob worker, so the frame needs no network at all.
import dicomParserSource from "dicom-parser/dist/dicomParser.min.js?raw";
import {
  acceptMessage,
  cropRect,
  fitShape,
  message,
  parseNumbers,
  refuseFile,
  resampleBilinear,
  topClasses,
  valuesToBytes,
  type PostprocessSpec,
  type RawTensor,
} from "./protocol";

/** The worker's code as source text: dicom-parser (its UMD build sets self.dicomParser), the protocol
 * functions the worker uses, then workerMain. Self-hosted: the sandbox has no network. */
export function workerSource(): string {
  const helpers = [cropRect, resampleBilinear, topClasses].map((f) => f.toString()).join("\n");
  return `function () {\n(function () {\n${dicomParserSource}\n}).call(self);\n${helpers}\n(${workerMain.toString()})();\n}`;
}

/** Runs in the worker, after the runtime's scripts: ONNX Runtime Web's wasm or WebGPU bundle (global
 * `ort`), TF.js (`tf`) or LiteRT.js (`litert`). RUNTIME starts the runtime; INIT loads the model into it. */
export function workerMain(): void {
  // Marks for the cold-start probe (benchmarks/cold_start_probe.py).
  performance.mark("secure-context:worker-runtime-evaluated");
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const ort = (self as any).ort;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let session: any = null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let tf: any = null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let graphModel: any = null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let litert: any = null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let tflite: any = null;
  /** LiteRT.js's XNNPack threads: more than one on a sandbox origin only (cross-origin isolated). */
  let litertThreads = 1;
  /** A model or runtime binary as the frame passed it: an ArrayBuffer, or a Blob (a handle: no copy
   * between the frames), gzip-compressed for a runtime binary the wheel ships compressed. */
  const bytesOf = async (data: ArrayBuffer | Blob, gzip = false): Promise<ArrayBuffer> => {
    if (!(data instanceof Blob)) return data;
    if (!gzip) return data.arrayBuffer();
    return new Response(data.stream().pipeThrough(new DecompressionStream("gzip"))).arrayBuffer();
  };
  /** Typed arrays per element type (float16 as its raw bits: ONNX Runtime Web takes a Uint16Array). */
  const ARRAYS: Record<string, any> = {
    float32: Float32Array,
    float16: Uint16Array,
    float64: Float64Array,
    int8: Int8Array,
    int16: Int16Array,
    int32: Int32Array,
    int64: BigInt64Array,
    uint8: Uint8Array,
    uint16: Uint16Array,
    uint32: Uint32Array,
    uint64: BigUint64Array,
    bool: Uint8Array,
  };
  type Raw = { name: string; dims: number[]; dtype: string; data: ArrayBuffer };
  /** An output as the frame passes it on: its own copy of the bytes, whatever the runtime's array. */
  const rawOutput = (position: number, dtype: string, dims: ArrayLike<number>, data: unknown): Omit<Raw, "name"> => {
    if (!ARRAYS[dtype] || !ArrayBuffer.isView(data)) {
      throw Object.assign(new Error(`output ${position} has an element type the component does not return`), { kind: "output" });
    }
    const view = data as ArrayBufferView;
    return { dims: Array.from(dims), dtype, data: view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength) as ArrayBuffer };
  };
  /** A runtime that takes only some element types refuses the others by position, before running. */
  const onlyTypes = (inputs: Raw[], allowed: string[], runtime: string) =>
    inputs.forEach((input, i) => {
      if (!allowed.includes(input.dtype)) {
        throw Object.assign(new Error(`${runtime} takes ${allowed.join(", ")} inputs; input ${i + 1} is ${input.dtype}`), {
          kind: "input",
        });
      }
    });
  /** Pixels (0-255, or a DICOM's modality values) at the model's size laid out as its input, by
   * Python's ImagePreprocess: NCHW or NHWC, RGB/BGR/GRAY, (pixel * scale - mean[c]) / std[c]. */
  const layoutTensor = (pixel: (at: number, c: number) => number, spec: Record<string, any>, name: string): Raw => {
    const [height, width] = spec.size as [number, number];
    const channels = spec.channels === "GRAY" ? 1 : 3;
    const count = width * height * channels;
    const values = spec.dtype === "uint8" ? new Uint8Array(count) : new Float32Array(count);
    const nchw = spec.layout === "NCHW";
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        for (let c = 0; c < channels; c++) {
          const value = pixel(y * width + x, c);
          const at = nchw ? c * width * height + y * width + x : (y * width + x) * channels + c;
          values[at] = spec.dtype === "uint8" ? value : (value * spec.scale - spec.mean[c]) / spec.std[c];
        }
      }
    }
    let data: ArrayBuffer = values.buffer as ArrayBuffer;
    if (spec.dtype === "float16") {
      const F16 = (self as any).Float16Array;
      if (!F16) throw Object.assign(new Error("this browser has no float16 arrays: use float32"), { kind: "file" });
      data = F16.from(values).buffer;
    }
    const dims = nchw ? [1, channels, height, width] : [1, height, width, channels];
    return { name, dims, dtype: spec.dtype, data };
  };
  /** A picked image as the model's input, by Python's ImagePreprocess: decoded by the browser
   * (createImageBitmap: no colour management, alpha not premultiplied), cut (crop "center") and drawn
   * at the model's size on an OffscreenCanvas, then laid out and normalised. Errors are fixed text:
   * the file stays here. */
  const imageTensor = async (image: Blob, spec: Record<string, any>, name: string): Promise<Raw> => {
    const [height, width] = spec.size as [number, number];
    let pixels: Uint8ClampedArray;
    try {
      const bitmap = await createImageBitmap(image, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
      const [sx, sy, sw, sh] = cropRect(bitmap.width, bitmap.height, height, width, spec.crop ?? "none");
      const canvas = new OffscreenCanvas(width, height);
      const context = canvas.getContext("2d", { willReadFrequently: true })!;
      context.imageSmoothingQuality = "high";
      context.drawImage(bitmap, sx, sy, sw, sh, 0, 0, width, height);
      bitmap.close();
      pixels = context.getImageData(0, 0, width, height).data;
    } catch {
      throw Object.assign(new Error("the picked file could not be decoded as an image"), { kind: "file" });
    }
    const gray = spec.channels === "GRAY";
    const order = spec.channels === "BGR" ? [2, 1, 0] : [0, 1, 2];
    return layoutTensor(
      (at, c) => (gray ? (pixels[at * 4] + pixels[at * 4 + 1] + pixels[at * 4 + 2]) / 3 : pixels[at * 4 + order[c]]),
      spec,
      name,
    );
  };
  /** A picked DICOM file as the model's input (dicom-parser, self-hosted in this worker's source):
   * uncompressed little endian (implicit or explicit VR), one sample per pixel, MONOCHROME1 or 2,
   * 8 or 16 bits; the first frame. Modality values (RescaleSlope/Intercept), then a window if asked
   * (0-255, as a PNG's pixel), cut and resized bilinearly. Every error is fixed text: a DICOM file
   * names its patient, and dicom-parser's own messages could quote the file. */
  const dicomTensor = async (file: Blob, spec: Record<string, any>, name: string): Promise<Raw> => {
    const fail = (text: string) => Object.assign(new Error(text), { kind: "file" });
    const parser = (self as any).dicomParser;
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(await file.arrayBuffer());
    } catch {
      throw fail("the picked file could not be read");
    }
    // Transfer syntaxes read: implicit VR little endian and explicit VR little endian (uncompressed).
    const SUPPORTED = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"];
    let dataSet: any;
    try {
      const header = parser.readPart10Header(bytes);
      const syntax = String(header.string("x00020010") ?? "").replace(/\0/g, "").trim();
      if (!SUPPORTED.includes(syntax)) dataSet = null;
      else dataSet = parser.parseDicom(bytes);
    } catch {
      throw fail("the picked file could not be parsed as DICOM");
    }
    if (dataSet === null) {
      throw fail(
        "the picked DICOM file's transfer syntax is not supported: only uncompressed little endian " +
          "(1.2.840.10008.1.2 implicit VR, 1.2.840.10008.1.2.1 explicit VR)",
      );
    }
    const rows = dataSet.uint16("x00280010");
    const columns = dataSet.uint16("x00280011");
    const samples = dataSet.uint16("x00280002") ?? 1;
    const bits = dataSet.uint16("x00280100");
    const signed = dataSet.uint16("x00280103") === 1;
    const photometric = String(dataSet.string("x00280004") ?? "").trim();
    const element = dataSet.elements.x7fe00010;
    if (!element || !rows || !columns) throw fail("the picked DICOM file has no pixel data");
    if (samples !== 1 || !["MONOCHROME1", "MONOCHROME2"].includes(photometric) || (bits !== 8 && bits !== 16)) {
      throw fail("the picked DICOM file's pixels are not supported: one sample per pixel, MONOCHROME1 or MONOCHROME2, 8 or 16 bits");
    }
    const count = rows * columns;
    if (element.length < count * (bits / 8) || element.dataOffset + count * (bits / 8) > bytes.length) {
      throw fail(`the picked DICOM file's pixel data is shorter than ${rows} x ${columns} pixels`);
    }
    const Stored = bits === 8 ? (signed ? Int8Array : Uint8Array) : signed ? Int16Array : Uint16Array;
    // A copy: the pixel data need not sit at an offset the typed array's alignment allows.
    const stored = new Stored(bytes.slice(element.dataOffset, element.dataOffset + count * (bits / 8)).buffer);
    const slope = Number(dataSet.floatString("x00281053") ?? 1);
    const intercept = Number(dataSet.floatString("x00281052") ?? 0);
    if (!Number.isFinite(slope) || !Number.isFinite(intercept)) throw fail("the picked DICOM file's rescale slope or intercept is not a number");
    const plane = new Float32Array(count);
    let low = Infinity;
    let high = -Infinity;
    for (let i = 0; i < count; i++) {
      plane[i] = stored[i] * slope + intercept;
      low = Math.min(low, plane[i]);
      high = Math.max(high, plane[i]);
    }
    let win: number[] | null = spec.window === "file" ? null : (spec.window ?? null);
    if (spec.window === "file") {
      const center = dataSet.floatString("x00281050", 0);
      const width = dataSet.floatString("x00281051", 0);
      if (!Number.isFinite(center) || !Number.isFinite(width) || width <= 0) {
        throw fail("the picked DICOM file has no window centre and width");
      }
      win = [center, width];
    }
    const inverted = photometric === "MONOCHROME1";
    for (let i = 0; i < count; i++) {
      let value = plane[i];
      if (win) {
        // Linear, clipped to the window: 0-255 as a PNG's grey levels.
        value = Math.min(Math.max((value - (win[0] - win[1] / 2)) / win[1], 0), 1) * 255;
        if (inverted) value = 255 - value;
      } else if (inverted) {
        // MONOCHROME1: the lowest value is white; mirrored within the picture's own range.
        value = low + high - value;
      }
      plane[i] = value;
    }
    const [height, width] = spec.size as [number, number];
    const rect = cropRect(columns, rows, height, width, spec.crop ?? "none");
    const resized = resampleBilinear(plane, columns, rect, height, width);
    if (spec.dtype === "uint8") for (let i = 0; i < resized.length; i++) resized[i] = Math.min(Math.max(Math.round(resized[i]), 0), 255);
    return layoutTensor((at) => resized[at], spec, name);
  };
  /** A result as the app asked for it: with Python's Postprocess, the classes (best first) and, unless
   * it keeps them, no outputs. */
  const answer = (result: Record<string, Omit<Raw, "name">>, post: any, outputNames: string[]) => {
    if (!post) return { outputs: result };
    const name = post.output ?? outputNames[0];
    const output = result[name];
    if (!output) throw Object.assign(new Error(`postprocess: the model has no output ${JSON.stringify(name)}`), { kind: "output" });
    const typed = new ARRAYS[output.dtype](output.data);
    const values = Array.from(typed as ArrayLike<number | bigint>, Number);
    if (values.some((v) => Number.isNaN(v))) throw Object.assign(new Error("postprocess: the output holds NaN"), { kind: "output" });
    const classes = topClasses(values, post);
    if (classes.some((c) => !Number.isFinite(c.score))) {
      throw Object.assign(new Error("postprocess: a score is NaN or infinite"), { kind: "output" });
    }
    return post.keepOutputs ? { classes, outputs: result } : { classes };
  };
  const isolatedNow = () => (self as unknown as { crossOriginIsolated?: boolean }).crossOriginIsolated === true;
  /** An error the frame reports with its kind: "model" (loading) or "input" (inference). */
  const failure = (kind: "model" | "input", error: unknown): Error =>
    Object.assign(
      new Error(`${kind === "model" ? "the model could not be loaded" : "inference failed"}: ${String(error)}`),
      { kind },
    );
  // An 8x8 MatMul + Add (component/examples/make_models.py, warmup_model): ONNX Runtime's first
  // session pays for its wasm code being compiled on first use (~0.2 s); paid here, before the model
  // arrives, the model's own session and first inference start warm.
  const ORT_WARMUP_MODEL =
    "CAgSADqRAwoSCgF4CgFXEgJ4dyIGTWF0TXVsCg8KAnh3CgFiEgF5IgNBZGQSBndhcm11cCqMAggICAgQAUIBV0qAAgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4AAAA+AAAAPgAAAD4qKQgIEAFCAWJKIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWhMKAXgSDgoMCAESCAoCCAgKAggIYhMKAXkSDgoMCAESCAoCCAgKAggIQgQKABAR";
  /** ONNX Runtime's execution providers: wasm, or webgpu where asked for and available. */
  let providers = ["wasm"];
  /** Starts the runtime: everything that does not need the model. */
  const startRuntime = async (payload: Record<string, any>): Promise<void> => {
    if (payload.kind === "tfjs") {
      // TF.js GraphModel on the wasm backend (no threads: the threaded binary is not shipped).
      tf = (self as any).tf;
      tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", false);
      tf.wasm.setWasmPaths(payload.wasmUrls ?? payload.wasmPaths);
      if (!(await tf.setBackend("wasm"))) throw new Error("the TF.js wasm backend did not start");
    } else if (payload.kind === "litert") {
      // LiteRT.js on its XNNPack CPU (wasm) path; WebGPU is not used.
      litert = (self as any).litert;
      if (payload.wasm) {
        // Opaque frame, single-threaded: the binary came with RUNTIME (the glue would fetch it, and
        // there is no network). The glue is a blob URL; the fragment names the file, as LiteRT.js's
        // loader wants a ".js" URL.
        (self as any).Module = { wasmBinary: await bytesOf(payload.wasm) };
        await litert.loadLiteRt(`${payload.glueUrl}#${payload.glueName}`);
      } else {
        // Isolated: the files come from the sandbox origin (this blob worker's own URL would give the
        // glue no directory to resolve them against), the threaded build with more than one thread.
        // Its pthreads start from the glue's URL there, named here: by default they would start from
        // this blob worker's URL.
        litertThreads = payload.threads;
        (self as any).Module = {
          locateFile: (file: string) => `${payload.wasmPaths}${file}`,
          mainScriptUrlOrBlob: `${payload.wasmPaths}litert_wasm_threaded_internal.js`,
        };
        await litert.loadLiteRt(payload.wasmPaths, { threads: litertThreads > 1 });
      }
    } else {
      if (payload.wasmPaths) {
        // Isolated mode: the runtime's files come from the sandbox origin itself (threads need that).
        ort.env.wasm.wasmPaths = payload.wasmPaths;
      } else {
        ort.env.wasm.wasmBinary = await bytesOf(payload.wasm, true);
        ort.env.wasm.wasmPaths = { mjs: payload.glueUrl };
      }
      ort.env.wasm.numThreads = payload.threads;
      ort.env.wasm.proxy = false;
      if (payload.kind === "ort-webgpu") {
        // WebGPU where the browser has it (an adapter), else the same build's wasm backend.
        const adapter = await (navigator as any).gpu?.requestAdapter();
        if (adapter) {
          ort.env.webgpu.adapter = adapter;
          providers = ["webgpu"];
        }
      }
      const warm = await ort.InferenceSession.create(Uint8Array.from(atob(ORT_WARMUP_MODEL), (c) => c.charCodeAt(0)), {
        executionProviders: providers,
      });
      const input = new ort.Tensor("float32", new Float32Array(64).fill(1), [8, 8]);
      await warm.run({ x: input });
      input.dispose?.();
      await warm.release();
    }
    performance.mark("secure-context:worker-runtime-ready");
  };
  // Until a RUNTIME message arrives, a model has nothing to load into.
  let runtime: Promise<void> = Promise.reject(new Error("no runtime was started"));
  runtime.catch(() => undefined);
  self.onmessage = async (event: MessageEvent) => {
    const { type, requestId, payload } = event.data;
    if (type === "RUNTIME") {
      runtime = startRuntime(payload);
      // A failure is answered when the model comes (INIT): nothing waits for an answer before it.
      runtime.catch(() => undefined);
      return;
    }
    if (type === "INIT") performance.mark("secure-context:worker-init");
    try {
      if (type === "INFER" && payload.image) {
        if (!session && !graphModel && !tflite) throw Object.assign(new Error("the model is not loaded yet"), { kind: "input" });
        const make = payload.dicom ? dicomTensor : imageTensor;
        payload.inputs = [await make(payload.image, payload.spec, payload.name)];
      }
      if (type === "INIT") {
        try {
          await runtime;
        } catch (error) {
          throw Object.assign(new Error(`the runtime did not start: ${String(error)}`), { kind: "runtime" });
        }
      }
      if (type === "INIT" && tf) {
        const { modelTopology, weightsManifest, format, generatedBy, convertedBy, signature } = payload.modelJson;
        const weightSpecs = weightsManifest.flatMap((group: { weights: unknown[] }) => group.weights);
        try {
          graphModel = await tf.loadGraphModel(
            tf.io.fromMemory({ modelTopology, weightSpecs, weightData: payload.model, format, generatedBy, convertedBy, signature }),
          );
        } catch (error) {
          throw failure("model", error);
        }
        performance.mark("secure-context:session-created");
        self.postMessage({
          type: "INIT_DONE",
          requestId,
          payload: { inputs: graphModel.inputNodes, outputs: graphModel.outputNodes, isolated: isolatedNow(), threads: 1, backend: "wasm" },
        });
      } else if (type === "INIT" && litert) {
        try {
          tflite = await litert.loadAndCompile(new Uint8Array(await bytesOf(payload.model)), {
            accelerator: "wasm",
            cpuOptions: { numThreads: litertThreads },
          });
        } catch (error) {
          throw failure("model", error);
        }
        performance.mark("secure-context:session-created");
        const names = (details: { name: string }[]) => details.map((d) => d.name);
        self.postMessage({
          type: "INIT_DONE",
          requestId,
          payload: {
            inputs: names(tflite.getInputDetails()),
            outputs: names(tflite.getOutputDetails()),
            isolated: (self as unknown as { crossOriginIsolated?: boolean }).crossOriginIsolated === true,
            threads: litertThreads,
            backend: "wasm",
          },
        });
      } else if (type === "INIT") {
        try {
          session = await ort.InferenceSession.create(new Uint8Array(await bytesOf(payload.model)), {
            executionProviders: providers,
            graphOptimizationLevel: "all",
          });
        } catch (error) {
          throw failure("model", error);
        }
        performance.mark("secure-context:session-created");
        self.postMessage({
          type: "INIT_DONE",
          requestId,
          payload: {
            inputs: session.inputNames,
            outputs: session.outputNames,
            isolated: (self as unknown as { crossOriginIsolated?: boolean }).crossOriginIsolated === true,
            threads: ort.env.wasm.numThreads,
            backend: providers[0],
          },
        });
      } else if (type === "INFER" && graphModel) {
        const inputs = payload.inputs as Raw[];
        onlyTypes(inputs, ["float32", "int32", "bool"], "TF.js");
        const result: Record<string, Omit<Raw, "name">> = {};
        // inferenceMs, in all three runtimes: from the inputs' tensors being made to the outputs read.
        const started = performance.now();
        const feeds: Record<string, unknown> = {};
        try {
          for (const input of inputs) feeds[input.name] = tf.tensor(new ARRAYS[input.dtype](input.data), input.dims, input.dtype);
          const outputs = await graphModel.executeAsync(feeds, graphModel.outputNodes);
          const list = Array.isArray(outputs) ? outputs : [outputs];
          list.forEach((tensor: { shape: number[]; dtype: string; dataSync: () => unknown; dispose: () => void }, i: number) => {
            try {
              result[graphModel.outputNodes[i]] = rawOutput(i + 1, tensor.dtype, tensor.shape, tensor.dataSync());
            } finally {
              tensor.dispose();
            }
          });
        } catch (error) {
          throw (error as { kind?: string }).kind ? error : failure("input", error);
        } finally {
          for (const tensor of Object.values(feeds)) (tensor as { dispose: () => void }).dispose();
        }
        const inferenceMs = performance.now() - started;
        const reply = answer(result, payload.post, Object.keys(result));
        const sent = Object.values(reply.outputs ?? {}).map((r) => r.data);
        self.postMessage({ type: "RESULT", requestId, payload: { ...reply, inferenceMs } }, sent);
      } else if (type === "INFER" && tflite && payload.synthetic) {
        // Benchmark input, as for ORT below: a fixed pattern of the given shape, inferred `runs` times.
        const { dims, runs } = payload.synthetic as { dims: number[]; runs: number };
        const size = dims.reduce((a: number, b: number) => a * b, 1);
        const data = new Float32Array(size).map((_, i) => (i % 7) / 7);
        const name = tflite.getInputDetails()[0].name;
        const times: number[] = [];
        for (let run = 0; run < runs; run++) {
          const feed = new litert.Tensor(data, dims);
          const started = performance.now();
          const outputs = await tflite.run({ [name]: feed });
          times.push(performance.now() - started);
          for (const tensor of Object.values(outputs) as { delete: () => void }[]) tensor.delete();
          feed.delete();
        }
        const isolated = (self as unknown as { crossOriginIsolated?: boolean }).crossOriginIsolated === true;
        self.postMessage({ type: "RESULT", requestId, payload: { inferenceMs: times, threads: litertThreads, isolated } });
      } else if (type === "INFER" && tflite) {
        const inputs = payload.inputs as Raw[];
        onlyTypes(inputs, ["float32", "int32", "uint8"], "LiteRT.js");
        const result: Record<string, Omit<Raw, "name">> = {};
        const started = performance.now();
        // LiteRT.js tensors live in wasm memory: every one is deleted by hand.
        const feeds: Record<string, { delete: () => void }> = {};
        try {
          for (const input of inputs) feeds[input.name] = new litert.Tensor(new ARRAYS[input.dtype](input.data), input.dims);
          const outputs = await tflite.run(feeds);
          let position = 0;
          for (const [name, tensor] of Object.entries(outputs) as [string, any][]) {
            position += 1;
            try {
              const dims = tensor.type.layout.dimensions as ArrayLike<number>;
              result[name] = rawOutput(position, String(tensor.type.dtype), dims, tensor.toTypedArray());
            } finally {
              tensor.delete();
            }
          }
        } catch (error) {
          throw (error as { kind?: string }).kind ? error : failure("input", error);
        } finally {
          for (const tensor of Object.values(feeds)) tensor.delete();
        }
        const inferenceMs = performance.now() - started;
        const reply = answer(result, payload.post, Object.keys(result));
        const sent = Object.values(reply.outputs ?? {}).map((r) => r.data);
        self.postMessage({ type: "RESULT", requestId, payload: { ...reply, inferenceMs } }, sent);
      } else if (type === "INFER" && session && payload.synthetic) {
        // Benchmark input: a fixed pattern of the given shape, inferred `runs` times.
        const { dims, runs } = payload.synthetic as { dims: number[]; runs: number };
        const size = dims.reduce((a: number, b: number) => a * b, 1);
        const data = new Float32Array(size).map((_, i) => (i % 7) / 7);
        const times: number[] = [];
        for (let run = 0; run < runs; run++) {
          const feed = new ort.Tensor("float32", data, dims);
          const started = performance.now();
          const outputs = await session.run({ [session.inputNames[0]]: feed });
          times.push(performance.now() - started);
          for (const tensor of Object.values(outputs)) (tensor as { dispose?: () => void }).dispose?.();
          feed.dispose?.();
        }
        performance.mark("secure-context:worker-inferred");
        const isolated = isolatedNow();
        const threads = ort.env.wasm.numThreads;
        self.postMessage({ type: "RESULT", requestId, payload: { inferenceMs: times, threads, isolated, backend: providers[0] } });
      } else if (type === "INFER" && session) {
        const inputs = payload.inputs as Raw[];
        const result: Record<string, Omit<Raw, "name">> = {};
        const started = performance.now();
        const feeds: Record<string, { dispose?: () => void }> = {};
        try {
          for (const input of inputs) feeds[input.name] = new ort.Tensor(input.dtype, new ARRAYS[input.dtype](input.data), input.dims);
          const outputs: Record<string, { type: string; dims: number[]; data: unknown; dispose?: () => void }> = await session.run(feeds);
          let position = 0;
          for (const [name, tensor] of Object.entries(outputs)) {
            position += 1;
            try {
              result[name] = rawOutput(position, tensor.type, tensor.dims, tensor.data);
            } finally {
              tensor.dispose?.();
            }
          }
        } catch (error) {
          throw (error as { kind?: string }).kind ? error : failure("input", error);
        } finally {
          for (const tensor of Object.values(feeds)) tensor.dispose?.();
        }
        const inferenceMs = performance.now() - started;
        const reply = answer(result, payload.post, Object.keys(result));
        const sent = Object.values(reply.outputs ?? {}).map((r) => r.data);
        self.postMessage({ type: "RESULT", requestId, payload: { ...reply, inferenceMs } }, sent);
      } else if (type === "INFER") {
        // A file picked, or values sent, before the model finished loading (the frame holds files
        // back until then; this is the worker's own guard).
        throw Object.assign(new Error("the model is not loaded yet"), { kind: "input" });
      } else if (type === "PROBE_FETCH") {
        // Test hook: proves the CSP blocks the worker from reaching any other origin.
        try {
          await fetch(payload.url);
          self.postMessage({ type: "RESULT", requestId, payload: { probe: "fetched" } });
        } catch (error) {
          self.postMessage({ type: "RESULT", requestId, payload: { probe: `blocked: ${String(error)}` } });
        }
      }
    } catch (error) {
      const kind = (error as { kind?: string }).kind ?? "worker";
      self.postMessage({ type: "ERROR", requestId, payload: { kind, message: String((error as Error).message ?? error) } });
    }
  };
}

interface Config {
  parentOrigin: string;
  /** Set in isolated mode: the sandbox origin that serves the runtime (and this page). */
  runtimeBase?: string;
  workerSource: string;
}

/** How a picked image becomes a tensor (Python's ImagePreprocess): resized to size (height, width),
 * laid out NCHW or NHWC, channels RGB, BGR or GRAY, each value (pixel * scale - mean[c]) / std[c]. */
interface ImageSpec {
  size: [number, number];
  layout: "NCHW" | "NHWC";
  channels: "RGB" | "BGR" | "GRAY";
  scale: number;
  mean: number[];
  std: number[];
  dtype: "float32" | "float16" | "uint8";
  crop: "none" | "center";
  /** DICOM only: null, "file" (the file's own) or [center, width]. */
  window: null | "file" | [number, number];
}

/** What the component sends before the model: the file picker's rules, the input's name, shape and
 * element type. */
interface Settings {
  filePicker: { accept: string[]; maxBytes: number; label: string; image: ImageSpec | null } | null;
  inputName: string | null;
  shape: number[];
  dtype: string;
  /** Python's Postprocess: applied in the worker, so only the answer leaves the sandbox. */
  postprocess: PostprocessSpec | null;
}


/** Runs in the sandboxed frame (opaque origin). Talks only to window.parent and its own worker. */
export function bootstrap(config: Config): void {
  performance.mark("secure-context:sandbox-bootstrap");
  /** Request ids of picked files: their errors go out as fixed text (fileError), never the runtime's. */
  const FIRST_FILE_REQUEST = 1_000_000;
  let worker: Worker | null = null;
  let glueUrl: string | null = null;
  let workerUrl: string | null = null;
  const blobUrls: string[] = [];
  let settings: Settings = { filePicker: null, inputName: null, shape: [1, -1], dtype: "float32", postprocess: null };
  let lastRequest = 0;
  /** The model is loaded: picked files go to the worker (before that they wait, the picker disabled). */
  let modelReady = false;
  let pendingFile: File | null = null;
  /** Each picked file's tensor shape, by request id, for its error message. */
  const fileShapes = new Map<number, number[]>();
  /** Each picked file's element type, by request id (an image's comes with its spec). */
  const fileTypes = new Map<number, string>();
  const toParent = (type: Parameters<typeof message>[0], requestId: number, payload?: unknown) =>
    // Results go to the component's own origin only, never to "*".
    window.parent.postMessage(message(type, requestId, payload), config.parentOrigin);
  /** An error about a picked file as Python may see it: fixed text and numbers. A runtime's own
   * message could quote anything it was given, so it stays here (on this frame's status line). */
  const fileError = (requestId: number, payload: { kind?: string; message?: string }) => {
    const dims = fileShapes.get(requestId);
    // "output" and "file" errors of the worker are its own fixed text (rawOutput, imageTensor).
    if (payload.kind === "output" || payload.kind === "file") return { kind: payload.kind, message: String(payload.message) };
    const dtype = fileTypes.get(requestId) ?? settings.dtype;
    const text = `the model refused the picked file's values as a ${dtype} tensor of shape [${(dims ?? []).join(", ")}]`;
    return { kind: "input", message: text };
  };

  const relay = (event: MessageEvent) => {
    const { type, requestId, payload } = event.data;
    if (type === "INIT_DONE") {
      if (settings.inputName === null) settings.inputName = payload.inputs[0];
      modelReady = true;
      const input = document.getElementById("secure-context-file") as HTMLInputElement | null;
      if (input) input.disabled = false;
      const status = document.getElementById("secure-context-status");
      if (status) status.textContent = "";
    }
    if (type === "ERROR" && requestId >= FIRST_FILE_REQUEST) toParent(type, requestId, fileError(requestId, payload));
    else if (type === "INIT_DONE" || type === "RESULT" || type === "ERROR") toParent(type, requestId, payload);
    if (type === "INIT_DONE" && pendingFile) {
      const file = pendingFile;
      pendingFile = null;
      void scoreFile(file);
    }
  };

  const cleanUp = () => {
    worker?.terminate();
    worker = null;
    if (glueUrl) URL.revokeObjectURL(glueUrl);
    if (workerUrl) URL.revokeObjectURL(workerUrl);
    for (const url of blobUrls.splice(0)) URL.revokeObjectURL(url);
  };
  window.addEventListener("pagehide", cleanUp);

  let nextFileRequest = FIRST_FILE_REQUEST;
  /** Reads a picked file, makes its tensor and sends it to the worker. Every error is fixed text and
   * numbers: the file's name and content never leave this frame. */
  const scoreFile = async (file: File) => {
    const rules = settings.filePicker!;
    const requestId = nextFileRequest++;
    const refused = refuseFile(file, rules);
    if (refused) {
      toParent("ERROR", requestId, { kind: "file", message: refused });
      return;
    }
    const spec = rules.image;
    const dicom = /\.(dcm|dicom)$/i.test(file.name);
    if (spec && (dicom || /\.(png|jpe?g|webp)$/i.test(file.name))) {
      // Decoded and preprocessed in the worker; its errors are fixed text (fileError, imageTensor).
      const channels = spec.channels === "GRAY" ? 1 : 3;
      const [height, width] = spec.size;
      fileShapes.set(requestId, spec.layout === "NCHW" ? [1, channels, height, width] : [1, height, width, channels]);
      fileTypes.set(requestId, spec.dtype);
      if (!worker) {
        toParent("ERROR", requestId, { kind: "worker", message: "the inference worker is not running" });
        return;
      }
      const post = settings.postprocess;
      worker.postMessage({ type: "INFER", requestId, payload: { image: file, dicom, spec, name: settings.inputName, post } });
      return;
    }
    try {
      let text: string;
      try {
        text = await file.text();
      } catch {
        throw Object.assign(new Error("the picked file could not be read"), { kind: "file" });
      }
      const values = parseNumbers(text);
      const dims = fitShape(values.length, settings.shape);
      const data = valuesToBytes(values, settings.dtype);
      fileShapes.set(requestId, dims);
      if (!worker) throw Object.assign(new Error("the inference worker is not running"), { kind: "worker" });
      // The file's content stays here: only the model's output leaves this frame.
      const inputs = [{ name: settings.inputName, dims, dtype: settings.dtype, data }];
      worker.postMessage({ type: "INFER", requestId, payload: { inputs, post: settings.postprocess } }, [data]);
    } catch (error) {
      // Our own checks give fixed text and positions; anything else is not passed on.
      const own = error as { kind?: string; message?: string };
      const ours = error instanceof Error && /^(value \d+ is not|\d+ values do not fit shape|shape \[|the picked file|the inference worker)/.test(String(own.message));
      toParent("ERROR", requestId, {
        kind: own.kind ?? "input",
        message: ours ? own.message : "the picked file could not be turned into the model's input",
      });
    }
  };

  const showFilePicker = (rules: NonNullable<Settings["filePicker"]>) => {
    const label = document.createElement("label");
    label.textContent = rules.label;
    const input = document.createElement("input");
    input.type = "file";
    input.id = "secure-context-file";
    input.accept = rules.accept.join(",");
    // Enabled once the model is loaded (INIT_DONE); a file picked anyway waits for it.
    input.disabled = !modelReady;
    label.appendChild(input);
    const status = document.createElement("span");
    status.id = "secure-context-status";
    status.textContent = modelReady ? "" : " Loading the model...";
    label.appendChild(status);
    document.body.appendChild(label);
    input.addEventListener("change", () => {
      const file = input.files?.[0];
      if (!file) return;
      if (modelReady) void scoreFile(file);
      else pendingFile = file;
    });
  };

  /** The worker with the runtime's scripts: the runtime starts at once, before the model is known. */
  const startRuntime = (requestId: number, payload: Record<string, unknown>) => {
    performance.mark("secure-context:sandbox-runtime");
    cleanUp();
    let source: string;
    let runtime: Record<string, unknown>;
    const kind = ["tfjs", "litert", "ort-webgpu"].includes(payload.kind as string) ? (payload.kind as string) : "ort";
    if (config.runtimeBase) {
      const scripts = {
        tfjs: ["tfjs/tf-core.min.js", "tfjs/tf-converter.min.js", "tfjs/tf-backend-wasm.min.js"],
        litert: ["litert/litert.iife.js"],
        ort: ["ort/ort.wasm.min.js"],
        // ONNX Runtime's WebGPU bundle (its asyncify build runs WebGPU and, without it, wasm).
        "ort-webgpu": ["ort/ort.webgpu.min.js"],
      }[kind]!;
      source = `importScripts(${scripts.map((f) => JSON.stringify(config.runtimeBase + f)).join(", ")});\n(${config.workerSource})();`;
      runtime = { wasmPaths: `${config.runtimeBase}${kind === "ort-webgpu" ? "ort" : kind}/` };
    } else {
      const binaries = payload.binaries as Record<string, ArrayBuffer | Blob>;
      source = `${(payload.scripts as string[]).join("\n;")}\n;(${config.workerSource})();`;
      if (kind === "tfjs") {
        // The wasm backend fetches its binary: from blob URLs of this frame (CSP connect-src blob:).
        const wasmUrls: Record<string, string> = {};
        for (const [name, buffer] of Object.entries(binaries)) {
          wasmUrls[name] = URL.createObjectURL(new Blob([buffer], { type: "application/wasm" }));
          blobUrls.push(wasmUrls[name]);
        }
        // TF.js asks for an entry per binary; the threaded one is never loaded (threads are off).
        wasmUrls["tfjs-backend-wasm-threaded-simd.wasm"] = wasmUrls["tfjs-backend-wasm-simd.wasm"];
        runtime = { wasmUrls };
      } else {
        // ORT imports its glue module, LiteRT.js imports its glue script: both from a blob URL.
        glueUrl = URL.createObjectURL(new Blob([payload.glue as string], { type: "text/javascript" }));
        runtime = { wasm: binaries.wasm, glueUrl, glueName: payload.glueName };
      }
    }
    workerUrl = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
    worker = new Worker(workerUrl);
    performance.mark("secure-context:worker-created");
    worker.onmessage = relay;
    // Fixed text: an uncaught error's message could quote what the worker was working on.
    worker.onerror = (event) => {
      event.preventDefault();
      toParent("ERROR", lastRequest, { kind: "worker", message: "the inference worker stopped with an uncaught error" });
    };
    worker.onmessageerror = () =>
      toParent("ERROR", lastRequest, { kind: "worker", message: "a message from the inference worker could not be read" });
    const transfer = [runtime.wasm].filter((b): b is ArrayBuffer => b instanceof ArrayBuffer);
    worker.postMessage({ type: "RUNTIME", requestId, payload: { kind, threads: payload.threads, ...runtime } }, transfer);
  };

  window.addEventListener("message", (event: MessageEvent) => {
    const accepted = acceptMessage(event, window.parent);
    if (!accepted) return;
    // On a real origin the sender's origin is known too: only the component's.
    if (config.runtimeBase && event.origin !== config.parentOrigin) return;
    const payload = accepted.payload as Record<string, unknown>;
    lastRequest = accepted.requestId;
    if (accepted.type === "RUNTIME") {
      startRuntime(accepted.requestId, payload);
    } else if (accepted.type === "SETTINGS" || (accepted.type === "INIT" && worker)) {
      settings = { ...settings, ...(payload.settings as Settings) };
      if (settings.filePicker && !document.getElementById("secure-context-file")) showFilePicker(settings.filePicker);
      if (accepted.type === "SETTINGS") return;
      performance.mark("secure-context:sandbox-init");
      const transfer = [payload.model].filter((b): b is ArrayBuffer => b instanceof ArrayBuffer);
      worker!.postMessage({ type: "INIT", requestId: accepted.requestId, payload: { model: payload.model, modelJson: payload.modelJson } }, transfer);
    } else if (accepted.type === "INFER" && worker) {
      if (payload.probeUrl) {
        worker.postMessage({ type: "PROBE_FETCH", requestId: accepted.requestId, payload: { url: payload.probeUrl } });
      } else if (payload.synthetic) {
        worker.postMessage({ type: "INFER", requestId: accepted.requestId, payload: { synthetic: payload.synthetic } });
      } else {
        // An unnamed input (Python's {"data", "dims"}) is the model's first.
        const inputs = (payload.inputs as RawTensor[]).map((t) => ({ ...t, name: t.name ?? settings.inputName }));
        const post = settings.postprocess;
        worker.postMessage({ type: "INFER", requestId: accepted.requestId, payload: { inputs, post } }, inputs.map((t) => t.data));
      }
    }
  });
}
