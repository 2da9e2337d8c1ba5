"""Test app: a picked PNG, JPEG or DICOM file classified by skin.onnx, with softmax and top-k done in the
sandbox's worker (component/tests/test_postprocess.py). Query parameters choose the preprocessing:
``crop``, ``window`` ("file" or "center,width"), ``scale``, ``threshold``, ``keep`` (raw logits too).
The page shows ``RESULT {json}`` or ``ERROR kind: ...``."""

from __future__ import annotations

import json

import streamlit as st
from streamlit_secure_context import (
    FilePicker,
    ImagePreprocess,
    Postprocess,
    SecureContextError,
    streamlit_secure_context,
)

LABELS = ("naevus", "melanoma", "keratosis", "dermatofibroma", "vascular")
query = st.query_params
window = query.get("window")
SPEC = ImagePreprocess(
    size=(16, 16),
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    scale=float(query.get("scale", 1 / 255)),
    crop=query.get("crop", "none"),
    window=None if window is None else "file" if window == "file" else tuple(float(v) for v in window.split(",")),
)
POST = Postprocess(
    softmax=True,
    top_k=3,
    labels=LABELS,
    threshold=float(query["threshold"]) if "threshold" in query else None,
    keep_outputs=query.get("keep") == "1",
)

try:
    result = streamlit_secure_context(
        "app/static/skin.onnx",
        file_picker=FilePicker(accept=(".png", ".jpg", ".dcm"), max_bytes=200_000, image=SPEC),
        postprocess=POST,
        timeout=60,
        key="classify",
    )
except SecureContextError as error:
    st.code(f"ERROR {error}", language=None)
else:
    if result and result.get("status") == "ok":
        answer = {"classes": result["classes"], "has_outputs": "outputs" in result}
        if "outputs" in result:
            answer["logits"] = result["outputs"]["logits"]["data"]
        st.code("RESULT " + json.dumps(answer), language=None)
    elif result and result.get("status") == "ready":
        st.write("Model loaded.")
