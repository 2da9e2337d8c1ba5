"""scripts/install_collections.py takes exactly the needed collections, with their dependencies,
out of a wheel (a real zip file laid out like the `ansible` wheel)."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.fixture
def installer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("install_collections", REPO / "scripts/install_collections.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "DEST", tmp_path / "dest" / "ansible_collections")
    monkeypatch.setattr(module, "WHEEL_CACHE", tmp_path / "wheels")
    return module


def make_wheel(path: Path, collections: dict[str, dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as wheel:
        for fqcn, deps in collections.items():
            root = "ansible_collections/" + fqcn.replace(".", "/")
            info = {"collection_info": {"version": "1.2.3", "dependencies": deps}}
            wheel.writestr(f"{root}/MANIFEST.json", json.dumps(info))
            wheel.writestr(f"{root}/plugins/modules/thing.py", "# module\n")


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ({"a.one": "*"}, {"a.one"}),
        ({"a.one": "*", "b.two": ">=1"}, {"a.one", "b.two", "c.three"}),
        ({"b.two": "*"}, {"b.two", "c.three"}),
    ],
)
def test_takes_wanted_collections_and_their_dependencies_only(installer, tmp_path, wanted, expected):
    make_wheel(
        installer.WHEEL_CACHE / "ansible-12.3.0-py3-none-any.whl",
        {"a.one": {}, "b.two": {"c.three": ">=1.0.0"}, "c.three": {}, "d.unwanted": {}},
    )
    installer.from_wheel(wanted)
    present = {f"{ns.name}.{coll.name}" for ns in installer.DEST.iterdir() for coll in ns.iterdir() if coll.is_dir()}
    assert present == expected
    for fqcn in expected:
        assert installer.installed_version(fqcn) == "1.2.3"


def test_missing_collection_is_a_clear_error(installer):
    make_wheel(installer.WHEEL_CACHE / "ansible-12.3.0-py3-none-any.whl", {"a.one": {}})
    with pytest.raises(SystemExit, match=r"z\.missing is not in ansible==12\.3\.0"):
        installer.from_wheel({"z.missing": "*"})
