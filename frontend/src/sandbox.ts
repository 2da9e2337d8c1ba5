// Code that runs inside the sandboxed inference frame and its worker. It is shipped as source text:
// the parent puts the bootstrap inline in the frame's srcdoc (allowed by its hash) and the worker
// code into a blob worker, so the frame needs no network at all.
import { acceptMessage, fitShape, message, parseNumbers, refuseFile } from "./protocol";

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
          payload: { inputs: graphModel.inputNodes, outputs: graphModel.outputNodes, isolated: false, threads: 1, backend: "wasm" },
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
        const result: Record<string, { dims: number[]; data: number[] }> = {};
        const started = performance.now();
        const feeds: Record<string, unknown> = {};
        try {
          for (const [name, input] of Object.entries(payload.inputs as Record<string, { data: number[]; dims: number[] }>)) {
            feeds[name] = tf.tensor(input.data, input.dims, "float32");
          }
          const outputs = await graphModel.executeAsync(feeds, graphModel.outputNodes);
          const list = Array.isArray(outputs) ? outputs : [outputs];
          list.forEach((tensor: { shape: number[]; dataSync: () => ArrayLike<number>; dispose: () => void }, i: number) => {
            result[graphModel.outputNodes[i]] = { dims: tensor.shape, data: Array.from(tensor.dataSync()) };
            tensor.dispose();
          });
        } catch (error) {
          throw failure("input", error);
        } finally {
          for (const tensor of Object.values(feeds)) (tensor as { dispose: () => void }).dispose();
        }
        self.postMessage({ type: "RESULT", requestId, payload: { outputs: result, inferenceMs: performance.now() - started } });
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
        const result: Record<string, { dims: number[]; data: number[] }> = {};
        const started = performance.now();
        // LiteRT.js tensors live in wasm memory: every one is deleted by hand.
        const feeds: Record<string, { delete: () => void }> = {};
        try {
          for (const [name, input] of Object.entries(payload.inputs as Record<string, { data: number[]; dims: number[] }>)) {
            feeds[name] = new litert.Tensor(Float32Array.from(input.data), input.dims);
          }
          const outputs = await tflite.run(feeds);
          for (const [name, tensor] of Object.entries(outputs) as [string, any][]) {
            result[name] = { dims: Array.from(tensor.type.layout.dimensions as ArrayLike<number>), data: Array.from(tensor.toTypedArray() as ArrayLike<number>) };
            tensor.delete();
          }
        } catch (error) {
          throw failure("input", error);
        } finally {
          for (const tensor of Object.values(feeds)) tensor.delete();
        }
        self.postMessage({ type: "RESULT", requestId, payload: { outputs: result, inferenceMs: performance.now() - started } });
      } else if (type === "INFER" && payload.synthetic) {
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
        const isolated = (self as unknown as { crossOriginIsolated?: boolean }).crossOriginIsolated === true;
        const threads = ort.env.wasm.numThreads;
        self.postMessage({ type: "RESULT", requestId, payload: { inferenceMs: times, threads, isolated, backend: providers[0] } });
      } else if (type === "INFER") {
        const feeds: Record<string, unknown> = {};
        for (const [name, input] of Object.entries(payload.inputs as Record<string, { data: number[]; dims: number[] }>)) {
          feeds[name] = new ort.Tensor("float32", Float32Array.from(input.data), input.dims);
        }
        const started = performance.now();
        let outputs: Record<string, { dims: number[]; data: ArrayLike<number>; dispose?: () => void }>;
        try {
          outputs = await session.run(feeds);
        } catch (error) {
          throw failure("input", error);
        }
        const result: Record<string, { dims: number[]; data: number[] }> = {};
        for (const [name, tensor] of Object.entries(outputs)) {
          result[name] = { dims: Array.from(tensor.dims), data: Array.from(tensor.data as ArrayLike<number>) };
          tensor.dispose?.();
        }
        for (const tensor of Object.values(feeds)) (tensor as { dispose?: () => void }).dispose?.();
        self.postMessage({ type: "RESULT", requestId, payload: { outputs: result, inferenceMs: performance.now() - started } });
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

/** What the component sends with the model: the file picker's rules, the input's name and shape. */
interface Settings {
  filePicker: { accept: string[]; maxBytes: number; label: string } | null;
  inputName: string | null;
  shape: number[];
}

/** Runs in the sandboxed frame (opaque origin). Talks only to window.parent and its own worker. */
export function bootstrap(config: Config): void {
  performance.mark("secure-context:sandbox-bootstrap");
  let worker: Worker | null = null;
  let glueUrl: string | null = null;
  let workerUrl: string | null = null;
  const blobUrls: string[] = [];
  let settings: Settings = { filePicker: null, inputName: null, shape: [1, -1] };
  let lastRequest = 0;
  const toParent = (type: Parameters<typeof message>[0], requestId: number, payload?: unknown) =>
    // Results go to the component's own origin only, never to "*".
    window.parent.postMessage(message(type, requestId, payload), config.parentOrigin);

  const relay = (event: MessageEvent) => {
    const { type, requestId, payload } = event.data;
    if (type === "INIT_DONE" && settings.inputName === null) settings.inputName = payload.inputs[0];
    if (type === "INIT_DONE" || type === "RESULT" || type === "ERROR") toParent(type, requestId, payload);
  };

  const cleanUp = () => {
    worker?.terminate();
    worker = null;
    if (glueUrl) URL.revokeObjectURL(glueUrl);
    if (workerUrl) URL.revokeObjectURL(workerUrl);
    for (const url of blobUrls.splice(0)) URL.revokeObjectURL(url);
  };
  window.addEventListener("pagehide", cleanUp);

  let nextFileRequest = 1_000_000;
  const showFilePicker = (rules: NonNullable<Settings["filePicker"]>) => {
    const label = document.createElement("label");
    label.textContent = rules.label;
    const input = document.createElement("input");
    input.type = "file";
    input.id = "secure-context-file";
    input.accept = rules.accept.join(",");
    label.appendChild(input);
    document.body.appendChild(label);
    input.addEventListener("change", async () => {
      const file = input.files?.[0];
      if (!file || !worker) return;
      const requestId = nextFileRequest++;
      const refused = refuseFile(file, rules);
      if (refused) {
        toParent("ERROR", requestId, { kind: "file", message: refused });
        return;
      }
      try {
        const values = parseNumbers(await file.text());
        const dims = fitShape(values.length, settings.shape);
        // The file's content stays here: only the model's output leaves this frame.
        worker.postMessage({ type: "INFER", requestId, payload: { inputs: { [settings.inputName!]: { data: values, dims } } } });
      } catch (error) {
        toParent("ERROR", requestId, { kind: "input", message: String((error as Error).message) });
      }
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
    worker.onerror = (error) => toParent("ERROR", lastRequest, { kind: "worker", message: error.message });
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
    } else if (accepted.type === "INIT" && worker) {
      performance.mark("secure-context:sandbox-init");
      settings = { ...settings, ...(payload.settings as Settings) };
      if (settings.filePicker && !document.getElementById("secure-context-file")) showFilePicker(settings.filePicker);
      const transfer = [payload.model].filter((b): b is ArrayBuffer => b instanceof ArrayBuffer);
      worker.postMessage({ type: "INIT", requestId: accepted.requestId, payload: { model: payload.model, modelJson: payload.modelJson } }, transfer);
    } else if (accepted.type === "INFER" && worker) {
      const inputs = payload.inputs as Record<string, { data: number[]; dims: number[] }> | undefined;
      const named = inputs ?? {};
      if (!inputs && payload.data) named[settings.inputName!] = { data: payload.data as number[], dims: payload.dims as number[] };
      if (payload.probeUrl) {
        worker.postMessage({ type: "PROBE_FETCH", requestId: accepted.requestId, payload: { url: payload.probeUrl } });
      } else {
        const synthetic = payload.synthetic;
        worker.postMessage({ type: "INFER", requestId: accepted.requestId, payload: synthetic ? { synthetic } : { inputs: named } });
      }
    }
  });
}
