"""Example: a risk score computed in the browser; the patient's file never reaches this server.

Run: python component/examples/make_models.py && streamlit run component/examples/app.py
(models go to component/examples/static/, served by Streamlit's static serving).
"""

from __future__ import annotations

import streamlit as st
from streamlit_secure_context import FilePicker, SecureContextError, streamlit_secure_context

st.title("Risk score, computed in your browser")
st.caption("The file you choose below is read inside a sandboxed frame; only the scores come back.")

model = st.query_params.get("model", "app/static/mlp.onnx")
timeout = float(st.query_params.get("timeout", "30"))
max_bytes = int(st.query_params.get("max_bytes", "1000"))
# ?backend=webgpu: ONNX Runtime's WebGPU build where the browser has WebGPU (on a sandbox origin).
backend = st.query_params.get("backend", "wasm")
# ?dtype=int32: the picked file's values as that element type (the model takes float32: the tests' refusal).
dtype = st.query_params.get("dtype", "float32")
try:
    result = streamlit_secure_context(
        model,
        inference_params={"shape": [1, 4], "backend": backend, "dtype": dtype},
        timeout=timeout,
        file_picker=FilePicker(accept=(".csv", ".txt"), max_bytes=max_bytes),
        key="risk",
    )
except SecureContextError as error:
    st.error(f"Inference failed ({error.kind}): {error}")
    result = None

if result and result.get("status") == "ok":
    scores = result["outputs"]["probabilities"]["data"]
    st.success("Scores: " + ", ".join(f"{s:.4f}" for s in scores))
elif result and result.get("status") == "ready":
    where = f"backend: {result.get('backend')}, threads: {result.get('threads')}"
    st.info(f"Model loaded in the sandbox ({where}). Choose a file.")

# Values from Python also work (no file): the same sandbox, same model.
st.divider()
if st.checkbox("Score the demo values from Python"):
    demo = streamlit_secure_context(
        model, inference_params={"inputs": {"data": [0.5, 1.0, -0.3, 2.0], "dims": [1, 4]}}, key="demo"
    )
    if demo and demo.get("status") == "ok":
        st.write("Demo scores:", ", ".join(f"{s:.4f}" for s in demo["outputs"]["probabilities"]["data"]))
