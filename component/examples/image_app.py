"""Test app: a picked PNG/JPEG decoded and preprocessed in the sandbox's worker, scored by a small
convolution (component/tests/test_images.py). The page shows ``RESULT {json}`` or ``ERROR kind: ...``."""

from __future__ import annotations

import json

import streamlit as st
from streamlit_secure_context import FilePicker, ImagePreprocess, SecureContextError, streamlit_secure_context

# ImageNet's normalisation, as most image models want it.
SPEC = ImagePreprocess(size=(16, 16), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
LAYOUT = st.query_params.get("layout", "NCHW")

try:
    result = streamlit_secure_context(
        "app/static/conv.onnx",
        file_picker=FilePicker(accept=(".png", ".jpg", ".jpeg"), max_bytes=100_000, image=SPEC),
        timeout=60,
        key="image",
    )
except SecureContextError as error:
    st.code(f"ERROR {error}", language=None)
else:
    if result and result.get("status") == "ok":
        out = result["outputs"]["features"]
        st.code("RESULT " + json.dumps({"dims": out["dims"], "data": out["data"]}), language=None)
    elif result and result.get("status") == "ready":
        st.write("Model loaded.")
