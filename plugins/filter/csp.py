"""Filters for the TLS edge's Content-Security-Policy (logic in module_utils/_csp.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._csp import inline_script_hashes


def csp_inline_script_hashes(html: object) -> list[str]:
    """sha256-<base64> hash sources of the inline scripts of an HTML page (empty text: none)."""
    if not isinstance(html, str):
        raise AnsibleFilterError(
            f"csp_inline_script_hashes expects the text of an HTML page, got {type(html).__name__}"
        )
    return inline_script_hashes(html)


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"csp_inline_script_hashes": csp_inline_script_hashes}
