"""A page whose favicon is a Material Symbol: Streamlit 1.67 fetches it from Google's font CDN, which
the edge's img-src refuses (test_edge_csp.py). Icons in the page come from the bundled font."""

import streamlit as st

st.set_page_config(page_title="icons", page_icon=":material/favorite:")
st.title("Material icons at the edge")
st.markdown(":material/check_circle: from the font Streamlit bundles")
