"""CSP hash sources for inline scripts: what a browser computes for the same page."""

from __future__ import annotations

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._csp import (
    hash_source,
    inline_script_hashes,
    inline_scripts,
)

# Streamlit 1.67's index.html bootstrap script, byte for byte (whitespace is part of the hash).
STREAMLIT_BOOTSTRAP = "\n      window.prerenderReady = false\n    "


def test_the_hash_of_streamlits_bootstrap_script_is_the_one_chromium_reports():
    # Chromium's console names this source when the script is refused under script-src 'self'.
    assert hash_source(STREAMLIT_BOOTSTRAP) == "sha256-THxz9J9+wf7rhwR2YkXJoSZ13UCmYyC+3lNDv2+8ugA="


def test_scripts_with_a_src_are_left_out_and_inline_ones_keep_their_exact_text():
    page = (
        '<html><head><script type="module" crossorigin src="./a.js"></script>'
        f"<script>{STREAMLIT_BOOTSTRAP}</script>"
        '<script type="module">if (a < b && c > d) { x = "</div>"; }</script></head></html>'
    )
    assert inline_scripts(page) == [STREAMLIT_BOOTSTRAP, 'if (a < b && c > d) { x = "</div>"; }']


def test_hashes_are_unique_and_in_document_order():
    page = "<script>b()</script><script>a()</script><script>b()</script>"
    assert inline_script_hashes(page) == [hash_source("b()"), hash_source("a()")]


def test_a_page_without_inline_scripts_gives_none():
    assert inline_script_hashes("") == []
    assert inline_script_hashes('<p>x</p><script src="x.js"></script>') == []


def test_non_ascii_text_is_hashed_as_utf8():
    assert hash_source("é") == "sha256-SplVfkAzw1Od4utlRyAXytX5VX96BiWgnxw/biumnEw="
