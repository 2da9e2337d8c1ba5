"""Temporary stand-in for the app model (replaced by the full library)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SHA_RE = re.compile(r"[0-9a-f]{40}")
NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,40}")


class AppSpecError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class AppSpec:
    index: int
    name: str
    repo: str | None
    url: str | None
    branch: str = "main"
    entrypoint: str = "streamlit_app.py"
    requirements: str = "requirements.txt"
    python: str = ""
    cpus: float = 1.0
    memory: str = "1g"
    memory_bytes: int = 1 << 30
    pids: int = 256
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    route_host: str = ""
    route_path: str = ""
    upload_max_mb: int = 200
    upstream: str | None = None
    access: dict[str, Any] = field(default_factory=dict)

    @property
    def managed(self) -> bool:
        return self.upstream is None

    @property
    def base_url_path(self) -> str:
        return self.route_path.strip("/")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AppSpec:
        return cls(**d)
