#!/usr/bin/python
"""Ansible module: where paths are stored: mount, block device chain, encryption at rest, free space."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: storage_info
short_description: Tell whether paths sit on an encrypted block device, and how much room is left
version_added: "1.0.0"
description:
  - For each path (or, when it does not exist yet, its nearest existing parent) finds the mount that holds
    it with C(findmnt), then walks the block devices below that mount with C(lsblk --inverse) and reports
    whether a C(crypt) device (LUKS or plain dm-crypt) is among them.
  - A mount whose source is no block device (overlay, tmpfs, a network file system) is reported as not
    encrypted, with the reason.
  - Also reports the free space of the mount (bytes and percent).
  - Reads only; always C(changed=false); runs normally in check mode.
author:
  - secure_streamlit maintainers (@secure-streamlit)
requirements:
  - findmnt and lsblk (util-linux)
options:
  paths:
    description: Absolute paths to look at.
    type: list
    elements: path
    required: true
attributes:
  check_mode:
    support: full
    description: The module only reads the mounts and block devices; it runs the same in check mode.
  diff_mode:
    support: none
    description: It changes nothing, so there is nothing to show.
"""

EXAMPLES = r"""
- name: Find out where the data directories are stored
  secure_streamlit.hosting.storage_info:
    paths: [/srv/streamlit, /var/log]
  register: storage

- name: Fail on data stored unencrypted
  ansible.builtin.fail:
    msg: "{{ item.path }} is on {{ item.mount }} ({{ item.source }}), not encrypted"
  loop: "{{ storage.paths | rejectattr('encrypted') }}"
"""

RETURN = r"""
paths:
  description: One entry per requested path, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    path: {description: The path asked about., type: str}
    exists: {description: Whether the path exists (else the nearest existing parent was looked at)., type: bool}
    looked_at: {description: The path actually resolved., type: str}
    mount: {description: Mount point holding it., type: str}
    source: {description: Source of that mount (device or pseudo file system)., type: str}
    fstype: {description: File system type., type: str}
    block_device: {description: Whether the source is a block device., type: bool}
    devices: {description: The block device chain from the mount's device down to the disk (name and type)., type: list}
    encrypted: {description: Whether a crypt device is in that chain., type: bool}
    reason: {description: "Why the path counts as encrypted or not, in one sentence.", type: str}
    size_bytes: {description: Size of the file system., type: int}
    avail_bytes: {description: Bytes available to unprivileged users., type: int}
    free_percent: {description: Available space in percent of the size (one decimal)., type: float}
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule


def nearest_existing(path: str) -> str:
    current = os.path.normpath(path)
    while not os.path.exists(current) and current != "/":
        current = os.path.dirname(current)
    return current


def describe(module: AnsibleModule, path: str) -> dict:
    looked_at = nearest_existing(path)
    info: dict = {"path": path, "exists": looked_at == os.path.normpath(path), "looked_at": looked_at}

    rc, out, err = module.run_command(["findmnt", "--json", "--output", "SOURCE,TARGET,FSTYPE", "--target", looked_at])
    if rc != 0:
        module.fail_json(msg=f"findmnt could not resolve {looked_at}: {err.strip()}")
    mount = json.loads(out)["filesystems"][0]
    # findmnt shows bind mounts as /dev/sda1[/sub/dir]: the device is before the bracket.
    source = mount["source"].split("[", 1)[0]
    info.update(mount=mount["target"], source=mount["source"], fstype=mount["fstype"])

    stat = os.statvfs(looked_at)
    size = stat.f_blocks * stat.f_frsize
    avail = stat.f_bavail * stat.f_frsize
    info.update(
        size_bytes=size,
        avail_bytes=avail,
        free_percent=round(100.0 * avail / size, 1) if size else 0.0,
    )

    info["block_device"] = source.startswith("/dev/") and os.path.exists(source)
    info["devices"] = []
    if not info["block_device"]:
        info["encrypted"] = False
        info["reason"] = f"the mount's source {source} ({mount['fstype']}) is not a block device"
        return info

    rc, out, err = module.run_command(["lsblk", "--inverse", "--json", "--output", "NAME,TYPE", source])
    if rc != 0:
        module.fail_json(msg=f"lsblk could not read {source}: {err.strip()}")
    chain: list[dict] = []
    stack = list(json.loads(out).get("blockdevices", []))
    while stack:
        device = stack.pop(0)
        chain.append({"name": device.get("name"), "type": device.get("type")})
        stack.extend(device.get("children", []) or [])
    info["devices"] = chain
    crypt = [d["name"] for d in chain if d["type"] == "crypt"]
    info["encrypted"] = bool(crypt)
    info["reason"] = (
        f"{source} sits on the dm-crypt device {crypt[0]}"
        if crypt
        else f"no crypt device below {source} ({' <- '.join(str(d['name']) for d in chain)})"
    )
    return info


def main() -> None:
    module = AnsibleModule(
        argument_spec={"paths": {"type": "list", "elements": "path", "required": True}},
        supports_check_mode=True,
    )
    for path in module.params["paths"]:
        if not os.path.isabs(path):
            module.fail_json(msg=f"paths: {path!r} is not absolute")
    module.exit_json(changed=False, paths=[describe(module, p) for p in module.params["paths"]])


if __name__ == "__main__":
    main()
