"""Content-Security-Policy helpers for the TLS edge: hash sources for a page's inline scripts.

A page whose inline scripts are allowed by their hashes needs no 'unsafe-inline' in script-src. The
hash covers the exact text between <script> and </script> (CSP Level 2, "hash-source"), encoded as
UTF-8. Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser


class _InlineScripts(HTMLParser):
    """Collects the text of every <script> element without a src attribute, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.scripts: list[str] = []
        self._current: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self._current = None if any(name == "src" for name, _value in attrs) else []

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            if self._current is not None:
                self.scripts.append("".join(self._current))
            self._current = None


def inline_scripts(html: str) -> list[str]:
    """The text of each inline script of an HTML document (scripts with a src are left out)."""
    parser = _InlineScripts()
    parser.feed(html)
    parser.close()
    return parser.scripts


def hash_source(script: str) -> str:
    """The CSP hash-source of one script's text, without quotes: sha256-<base64>."""
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def inline_script_hashes(html: str) -> list[str]:
    """Hash sources (sha256-<base64>, unquoted, unique, in document order) of a page's inline scripts."""
    out: list[str] = []
    for script in inline_scripts(html):
        source = hash_source(script)
        if source not in out:
            out.append(source)
    return out
