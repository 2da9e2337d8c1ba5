"""Benchmark page: the 4 MB MatMul model on a fixed 1024x1024 input, inferred `runs` times in the
sandboxed worker. Used by benchmarks/component_bench.py."""

from __future__ import annotations

import json

import streamlit as st
from streamlit_secure_context import streamlit_secure_context

if st.query_params.get("baseline"):
    # Streamlit alone: the same page with no component, for the share of the cold start that is Streamlit's.
    st.text("BENCH {}")
    st.stop()
runs = int(st.query_params.get("runs", "10"))
# ?threads=N; without it, the component's default (1 in the opaque frame, 2 on a sandbox origin).
threads = st.query_params.get("threads")
# ?backend=webgpu: ONNX Runtime's WebGPU build (on a sandbox origin, where the browser has WebGPU).
backend = st.query_params.get("backend", "wasm")
# ?model=app/static/matmul-4mb.tflite: the same model on LiteRT.js.
model = st.query_params.get("model", "app/static/matmul-4mb.onnx")
# ?dims=1,3,224,224: the synthetic input's shape (benchmarks/component_models_bench.py).
dims = [int(d) for d in st.query_params.get("dims", "1024,1024").split(",")]
result = streamlit_secure_context(
    model,
    inference_params={"synthetic": {"dims": dims, "runs": runs}, "backend": backend},
    # The sandbox origin, when the platform sets one, comes from SECURE_CONTEXT_SANDBOX_ORIGIN.
    security_config={} if threads is None else {"threads": int(threads)},
    timeout=300,
    key="bench",
)
if result and "inferenceMs" in result:
    st.text("BENCH " + json.dumps({k: result.get(k) for k in ("inferenceMs", "threads", "isolated", "backend")}))
