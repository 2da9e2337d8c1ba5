"""Test app: tensors from Python through the sandboxed model and back (component/tests/test_tensors.py).

``?case=NAME`` runs one of tensor_cases.CASES; the page shows ``RESULT {json}`` (each output's dtype,
dims, data and its numpy array's dtype and shape; JSON with NaN/Infinity, ints exact) or
``ERROR kind: message``.
"""

from __future__ import annotations

import json

import streamlit as st
from streamlit_secure_context import SecureContextError, streamlit_secure_context
from tensor_cases import CASES

case = st.query_params.get("case", "dtypes")
model, inputs = CASES[case]
try:
    result = streamlit_secure_context(model, inference_params={"inputs": inputs}, timeout=60, key=case)
except SecureContextError as error:
    st.code(f"ERROR {error}", language=None)
else:
    if result and result.get("status") == "ok":
        shown = {
            name: {
                "dtype": out["dtype"],
                "dims": out["dims"],
                "data": out["data"],
                "array": [str(out["array"].dtype), list(out["array"].shape)],
            }
            for name, out in result["outputs"].items()
        }
        st.code("RESULT " + json.dumps(shown), language=None)
