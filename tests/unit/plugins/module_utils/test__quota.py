"""Data sizes (plugins/module_utils/_quota.py): the size rule, which mounts have project quotas, and the
kernel calls on real ext4 file systems made on loop devices.

Where the kernel cannot mount ext4 with project quotas (this lab's kernel is built without
CONFIG_QFMT_V2), the enforcement test skips and says so; detection, the fallback and the kernel's refusals
run against a real ext4 mount all the same.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils import _quota
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._quota import (
    Mount,
    QuotaError,
    apply,
    apply_sizes,
    mount_of,
    parse_mountinfo,
    parse_size,
    project_id,
    read_mounts,
    size_problem,
    support,
    usage_bytes,
)

APP_UID = 65534  # nobody: root's CAP_SYS_RESOURCE passes over quota limits, an app's uid does not


@pytest.mark.parametrize(
    ("text", "size"),
    [("1M", 1 << 20), ("500M", 500 << 20), ("10G", 10 << 30), ("2T", 2 << 40), ("2048K", 2 << 20)],
)
def test_a_size_is_a_whole_number_and_a_unit(text, size):
    assert parse_size(text) == size
    assert size_problem(text) is None


@pytest.mark.parametrize(
    "text", ["10", "10g", "10GB", "1.5G", " 10G", "10G\n", "0G", "512K", "-1G", "1e3M", "", 10, None, True, ["1G"]]
)
def test_anything_else_is_not_a_size(text):
    assert parse_size(text) is None
    assert "such as 500M or 10G" in (size_problem(text) or "")


def test_project_ids_are_stable_and_in_the_platform_s_block():
    assert project_id("triage") == project_id("triage")
    assert project_id("triage") != project_id("notes")
    assert _quota.PROJECT_BASE <= project_id("triage") < _quota.PROJECT_BASE + _quota.PROJECT_SPAN


MOUNTINFO = (
    "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard\n"
    "30 22 254:16 / /srv rw,relatime shared:2 - ext4 /dev/mapper/data rw,prjquota\n"
    "31 30 0:40 / /srv/streamlit/my\\040dir rw shared:3 - tmpfs tmpfs rw,size=1024k\n"
    "32 22 254:32 / /var/lib/x rw shared:4 - xfs /dev/vdc rw,attr2,inode64,pquota\n"
    "33 22 254:48 / /var/lib/y rw shared:5 - xfs /dev/vdd rw,attr2,inode64,noquota\n"
    "34 22 0:50 / /overlay rw shared:6 - overlay overlay rw,lowerdir=/a\n"
)


def test_the_mount_holding_a_path_is_the_longest_mount_point_above_it():
    mounts = parse_mountinfo(MOUNTINFO)
    assert mount_of("/srv/streamlit/apps", mounts).mount_point == "/srv"
    assert mount_of("/srv", mounts).mount_point == "/srv"
    assert mount_of("/srvx", mounts).mount_point == "/"
    assert mount_of("/srv/streamlit/my dir/a", mounts).fstype == "tmpfs"  # \040 is a space


def test_project_quota_support_is_read_from_the_mount_options():
    mounts = parse_mountinfo(MOUNTINFO)
    assert support("/srv/streamlit/apps", mounts).enforced
    assert support("/var/lib/x/apps", mounts).enforced
    plain = support("/opt/apps", mounts)
    assert not plain.enforced
    assert plain.reason == (
        "/opt/apps is on ext4 (/) mounted without project quotas: it needs the project and quota features "
        "(tune2fs -O project,quota) and the mount option prjquota"
    )
    assert "xfs (/var/lib/y)" in support("/var/lib/y/apps", mounts).reason
    assert "prjquota (or pquota)" in support("/var/lib/y/apps", mounts).reason
    assert "overlay (/overlay), which has no project quotas here" in support("/overlay/apps", mounts).reason


# -- real file systems on loop devices ----------------------------------------------------------------------
def _loop_mount(tmp_path: Path, name: str, mkfs_options: list[str], mount_options: str) -> Path:
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4") or not Path("/dev/loop-control").exists():
        pytest.skip("needs root, mkfs.ext4 and loop devices")
    image = tmp_path / f"{name}.img"
    with open(image, "wb") as handle:
        handle.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", *mkfs_options, str(image)], check=True)
    point = tmp_path / name
    point.mkdir()
    done = subprocess.run(
        ["mount", "-o", f"loop,{mount_options}", str(image), str(point)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"this kernel does not mount ext4 {' '.join(mkfs_options)} -o {mount_options}: {done.stderr}")
    return point


@pytest.fixture
def plain_ext4(tmp_path):
    point = _loop_mount(tmp_path, "plain", [], "rw")
    yield point
    subprocess.run(["umount", str(point)], check=True)


@pytest.fixture
def quota_ext4(tmp_path):
    point = _loop_mount(tmp_path, "quota", ["-O", "quota,project"], "rw,prjquota")
    yield point
    subprocess.run(["umount", str(point)], check=True)


def _app_dir(root: Path, name: str) -> Path:
    directory = root / "apps" / name
    directory.mkdir(parents=True)
    os.chown(directory, APP_UID, APP_UID)
    return directory


def test_on_ext4_without_prjquota_nothing_is_enforced_and_one_warning_names_the_fix(plain_ext4):
    for name in ("notes", "triage"):
        _app_dir(plain_ext4, name)
        (plain_ext4 / "apps" / name / "kept.txt").write_text("kept\n")
    done, warnings = apply_sizes(
        [("notes", 1 << 20), ("triage", 2 << 20), ("absent", 1 << 20)], str(plain_ext4 / "apps"), read_mounts()
    )
    assert [(a.app, a.enforced, a.changed) for a in done] == [("notes", False, False), ("triage", False, False)]
    assert warnings == [
        f"the data sizes of notes, triage are not enforced: {plain_ext4}/apps is on ext4 ({plain_ext4}) mounted "
        "without project quotas: it needs the project and quota features (tune2fs -O project,quota) and the "
        "mount option prjquota; `secure-streamlit status` shows their usage against the size"
    ]
    assert (plain_ext4 / "apps/notes/kept.txt").read_text() == "kept\n"


def test_usage_is_what_the_file_system_allocated_without_following_links(plain_ext4):
    directory = _app_dir(plain_ext4, "notes")
    empty = usage_bytes(str(directory))
    (directory / "blob").write_bytes(os.urandom(3 << 20))
    (directory / "sub").mkdir()
    os.link(directory / "blob", directory / "sub/same-blob")  # counted once
    outside = plain_ext4 / "outside"
    outside.write_bytes(os.urandom(2 << 20))
    (directory / "link").symlink_to(outside)
    used = usage_bytes(str(directory))
    assert 3 << 20 <= used - empty < (3 << 20) + (64 << 10)
    assert usage_bytes(str(plain_ext4 / "apps/none")) == 0


def test_where_the_kernel_refuses_the_limit_the_error_names_the_directory_and_changes_nothing(plain_ext4):
    directory = _app_dir(plain_ext4, "notes")
    claimed = [Mount(str(plain_ext4), "ext4", "/dev/loop", ("rw", "prjquota"))]  # a mount table that is wrong
    with pytest.raises(QuotaError) as caught:
        apply(str(directory), "notes", 1 << 20, claimed)
    assert str(caught.value).startswith(f"limiting {directory} to 1048576 bytes (project {project_id('notes')}")
    assert "No such process" in str(caught.value)  # quotactl: quotas are not on for this file system
    fd = os.open(directory, os.O_RDONLY)
    try:
        assert _quota.get_project(fd) == (0, 0)
        with pytest.raises(OSError, match="not supported") as refused:
            _quota.set_project(fd, 5, inherit=True)  # no project feature: the kernel says so
        assert refused.value.errno == errno.EOPNOTSUPP
    finally:
        os.close(fd)


def test_with_prjquota_a_write_over_the_size_fails_and_the_app_s_files_stay(quota_ext4):
    directory = _app_dir(quota_ext4, "notes")
    before = directory / "before.txt"
    before.write_text("written before the limit\n")
    os.chown(before, APP_UID, APP_UID)
    done, warnings = apply_sizes([("notes", 2 << 20)], str(quota_ext4 / "apps"), read_mounts())
    assert warnings == []
    assert [(a.enforced, a.changed) for a in done] == [(True, True)]
    again, _ = apply_sizes([("notes", 2 << 20)], str(quota_ext4 / "apps"), read_mounts())
    assert [a.changed for a in again] == [False]  # a second run changes nothing
    write = (
        "import os, sys\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)\n"
        "try:\n"
        "    for _ in range(4):\n"
        "        os.write(fd, b'x' * (1 << 20)); os.fsync(fd)\n"
        "except OSError as exc:\n"
        "    sys.exit(exc.errno)\n"
    )
    done_write = subprocess.run(
        ["python3", "-c", write, str(directory / "big")], user=APP_UID, group=APP_UID, check=False
    )
    assert done_write.returncode == errno.EDQUOT
    assert before.read_text() == "written before the limit\n"
    assert usage_bytes(str(directory)) <= (2 << 20) + (64 << 10)
