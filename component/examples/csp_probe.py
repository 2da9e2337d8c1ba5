"""Test page: asks the sandboxed worker to fetch another origin; the CSP must block it.

Used by component/tests (run with `streamlit run csp_probe.py` in this directory).
"""

from __future__ import annotations

import streamlit as st
from streamlit_secure_context import streamlit_secure_context

target = st.query_params.get("target", "http://127.0.0.1:9/")
result = streamlit_secure_context("app/static/mlp.onnx", inference_params={"probe_url": target}, key="probe")
if result and "probe" in result:
    st.write(f"Probe: {result['probe']}")
