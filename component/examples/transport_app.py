"""Benchmark app: the round trip of a 1x3x256x256 float32 input and a 264,627-float output between
Python and the sandboxed worker (benchmarks/component_bench.py --transport).

The first run loads the model (no input); once it is ready the next run sends the input and notes the
time; the run the answer brings shows ``TRANSPORT {json}``: the round trip in Python's clock and the
worker's inferenceMs. The legacy input form ({"data", "dims"}) runs on the component before and after
the tensors went binary, so both can be measured with this one app. ``?post=1``: the top 5 values,
computed in the sandbox, are all that returns (Postprocess).
"""

from __future__ import annotations

import json
import time

import numpy as np
import streamlit as st
import streamlit_secure_context as ssc

state = st.session_state
x = (np.arange(3 * 256 * 256, dtype=np.float32) % 251 / 251).reshape(1, 3, 256, 256)
params: dict = {}
if state.get("ready"):
    params["inputs"] = {"data": x.ravel().tolist(), "dims": [1, 3, 256, 256]}
    state.setdefault("sent", time.perf_counter())
# ?post=1: the top 5 of the output computed in the sandbox: only those return (the output stays there).
# Passed only then: the component before Postprocess (--before) runs this app too.
post = {"postprocess": ssc.Postprocess(top_k=5)} if st.query_params.get("post") else {}
result = ssc.streamlit_secure_context(
    "app/static/pad.onnx", inference_params=params, timeout=120, key="transport", **post
)
if result and result.get("status") == "ready" and not state.get("ready"):
    state.ready = True
    st.rerun()
if result and result.get("status") == "ok":
    received = time.perf_counter()
    if post:
        assert abs(result["classes"][0]["score"] - float(x.max())) < 1e-6
    else:
        y = np.asarray(result["outputs"]["y"]["data"], dtype=np.float32)
        assert y.size == 3 * 297 * 297
        assert float(y.max()) == float(x.max())
    shown = {"roundTripMs": (received - state.sent) * 1000, "inferenceMs": result["inferenceMs"]}
    st.code("TRANSPORT " + json.dumps(shown), language=None)
