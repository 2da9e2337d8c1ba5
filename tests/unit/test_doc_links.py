"""Every relative link in the README, CONTRIBUTING, CHANGELOG, docs/ and the role READMEs resolves in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import REPO

DOCUMENTS = sorted(
    [
        *(REPO / name for name in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md", "component/README.md")),
        *(REPO / "docs").glob("*.md"),
        *(REPO / "roles").glob("*/README.md"),
    ]
)
# [text](target) and [text]: target; images too. Code spans are removed first.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    text = CODE.sub("", document.read_text())
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", text, re.MULTILINE)}


def links(document: Path) -> list[str]:
    text = CODE.sub("", document.read_text())
    return INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)


def test_the_documents_exist():
    assert (REPO / "README.md").is_file()
    assert len(DOCUMENTS) > 5


def link_problems(document: Path, root: Path) -> list[str]:
    problems = []
    for target in links(document):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not a file of ours
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (document.parent / path_part).resolve() if path_part else document
        if not resolved.is_relative_to(root):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading #{anchor} in {resolved.relative_to(root)}")
    return problems


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves_inside_the_repository(document: Path):
    problems = link_problems(document, REPO)
    assert not problems, f"{document.relative_to(REPO)}: " + "; ".join(problems)


def test_the_check_catches_links_out_of_the_tree_missing_files_and_headings(tmp_path: Path):
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (tmp_path / "shared.md").write_text("# Outside\n")
    (root / "docs" / "edge.md").write_text("# The TLS edge\n## Swaps\n")
    readme = root / "README.md"
    readme.write_text(
        "[a](../shared.md) [b](docs/gone.md) [c](docs/edge.md#routes) [d](docs/edge.md#swaps)"
        " [e](https://example.org/x) `[f](nowhere.md)` [g](#the-readme)\n# The README\n"
    )
    assert link_problems(readme, root) == [
        "../shared.md: outside the repository",
        "docs/gone.md: no such file",
        "docs/edge.md#routes: no heading #routes in docs/edge.md",
    ]
