"""Each role's README, its meta/argument_specs.yml and its defaults/main.yml agree.

The README is generated from the argument specs (`make docs`, aar-doc); ansible-doc and the role's
argument validation read the specs; the play reads the defaults. A variable in one and not the others
is undocumented, or documented with a value the role does not use.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, VENV_BIN

ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())
BEGIN, END = "<!-- BEGIN_ANSIBLE_DOCS -->\n", "<!-- END_ANSIBLE_DOCS -->\n"


def specs(role: str) -> dict[str, dict]:
    return yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]


def defaults(role: str) -> dict:
    return yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}


def templated(value: object) -> bool:
    """A default computed at run time: the specs describe it in words instead."""
    return isinstance(value, str) and "{{" in value


def generated_block(text: str) -> str:
    assert BEGIN in text, "no BEGIN_ANSIBLE_DOCS marker"
    assert END in text, "no END_ANSIBLE_DOCS marker"
    return text[text.index(BEGIN) : text.index(END) + len(END)]


def test_every_role_has_specs():
    assert {"apps", "audit", "docker", "hardening", "monitor", "tls"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_an_option_of_the_main_entry_point(role: str):
    undocumented = sorted(set(defaults(role)) - set(specs(role)["main"].get("options", {})))
    assert not undocumented, f"roles/{role}: in defaults/main.yml, not in meta/argument_specs.yml: {undocumented}"


@pytest.mark.parametrize("role", ROLES)
def test_every_option_has_a_default_or_is_required(role: str):
    role_defaults = defaults(role)
    problems = [
        f"{entry_point}: {name}"
        for entry_point, spec in specs(role).items()
        for name, option in (spec.get("options") or {}).items()
        if name not in role_defaults and not option.get("required", False)
    ]
    assert not problems, f"roles/{role}: options with neither a default nor required: true: {problems}"


@pytest.mark.parametrize("role", ROLES)
def test_the_specs_show_the_defaults_the_role_uses(role: str):
    options = specs(role)["main"].get("options", {})
    problems = []
    for name, value in defaults(role).items():
        option = options.get(name, {})
        if templated(value):
            continue
        if "default" not in option:
            problems.append(f"{name}: no default in the specs (defaults/main.yml: {value!r})")
        elif option["default"] != value:
            problems.append(f"{name}: specs say {option['default']!r}, defaults/main.yml {value!r}")
    assert not problems, f"roles/{role}: " + "; ".join(problems)


@pytest.mark.parametrize("role", ROLES)
def test_the_readme_is_generated_from_the_current_specs(role: str, tmp_path: Path):
    readme = REPO / "roles" / role / "README.md"
    assert readme.is_file(), f"roles/{role}/README.md is missing: run `make docs`"
    fresh = tmp_path / "README.md"
    subprocess.run(
        [str(VENV_BIN / "aar-doc"), "--output-file", str(fresh), str(REPO / "roles" / role), "markdown"],
        check=True,
        capture_output=True,
    )
    assert generated_block(readme.read_text()) == generated_block(fresh.read_text()), (
        f"roles/{role}/README.md is out of date with meta/argument_specs.yml: run `make docs`"
    )


@pytest.mark.parametrize("role", ROLES)
def test_the_readme_documents_every_default(role: str):
    block = generated_block((REPO / "roles" / role / "README.md").read_text())
    missing = [name for name in defaults(role) if f"| {name} |" not in block]
    assert not missing, f"roles/{role}/README.md does not document {missing}: run `make docs`"
