"""storage_info decides "encrypted at rest" from the block device chain: findmnt and lsblk answers as
they come on a LUKS host, a plain disk, LVM on LUKS and a container's overlay."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.modules import storage_info


class FakeModule:
    def __init__(self, source: str, fstype: str, target: str, lsblk: list[dict] | None):
        self.answers = {
            "findmnt": json.dumps({"filesystems": [{"source": source, "target": target, "fstype": fstype}]}),
            "lsblk": json.dumps({"blockdevices": lsblk or []}),
        }
        self.calls: list[list[str]] = []

    def run_command(self, argv: list[str]):
        self.calls.append(argv)
        return 0, self.answers[argv[0]], ""

    def fail_json(self, **kwargs):
        raise AssertionError(kwargs["msg"])


@pytest.fixture(autouse=True)
def devices_exist(monkeypatch: pytest.MonkeyPatch):
    real_exists = os.path.exists
    monkeypatch.setattr(storage_info.os.path, "exists", lambda p: p.startswith("/dev/") or real_exists(p))
    monkeypatch.setattr(
        storage_info.os, "statvfs", lambda p: SimpleNamespace(f_blocks=1000, f_frsize=4096, f_bavail=250)
    )


def test_luks_volume_counts_as_encrypted():
    module = FakeModule(
        "/dev/mapper/data",
        "ext4",
        "/srv",
        [{"name": "data", "type": "crypt", "children": [{"name": "vdb", "type": "disk"}]}],
    )
    info = storage_info.describe(module, "/srv")
    assert info["encrypted"] is True
    assert info["devices"] == [{"name": "data", "type": "crypt"}, {"name": "vdb", "type": "disk"}]
    assert "dm-crypt device data" in info["reason"]
    assert info["free_percent"] == 25.0
    assert module.calls[1] == ["lsblk", "--inverse", "--json", "--output", "NAME,TYPE", "/dev/mapper/data"]


def test_lvm_on_luks_is_found_below_the_logical_volume():
    module = FakeModule(
        "/dev/mapper/vg-phi",
        "xfs",
        "/var/lib/docker",
        [
            {
                "name": "vg-phi",
                "type": "lvm",
                "children": [{"name": "luks-1", "type": "crypt", "children": [{"name": "nvme0n1p3", "type": "part"}]}],
            }
        ],
    )
    assert storage_info.describe(module, "/var/lib/docker")["encrypted"] is True


def test_plain_disk_is_not_encrypted_and_says_why():
    module = FakeModule("/dev/vda", "ext4", "/", [{"name": "vda", "type": "disk"}])
    info = storage_info.describe(module, "/var/log")
    assert info["encrypted"] is False
    assert info["reason"] == "no crypt device below /dev/vda (vda)"


def test_overlay_is_not_a_block_device():
    module = FakeModule("overlay", "overlay", "/", None)
    info = storage_info.describe(module, "/srv/streamlit")
    assert (info["encrypted"], info["block_device"]) == (False, False)
    assert "not a block device" in info["reason"]
    assert [call[0] for call in module.calls] == ["findmnt"]


def test_bind_mount_source_is_resolved_to_its_device():
    module = FakeModule("/dev/mapper/data[/apps]", "ext4", "/srv/streamlit", [{"name": "data", "type": "crypt"}])
    info = storage_info.describe(module, "/srv/streamlit")
    assert info["encrypted"] is True
    assert module.calls[1][-1] == "/dev/mapper/data"


def test_missing_directory_is_looked_up_through_its_nearest_parent(tmp_path):
    module = FakeModule("/dev/vda", "ext4", "/", [{"name": "vda", "type": "disk"}])
    info = storage_info.describe(module, str(tmp_path / "not" / "yet"))
    assert info["exists"] is False
    assert info["looked_at"] == str(tmp_path)
    assert module.calls[0][-1] == str(tmp_path)
