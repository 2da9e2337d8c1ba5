"""Lookup: a deterministic tar of source files on the controller (logic in module_utils/_source_archive.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: source_archive
short_description: A deterministic tar of source files, for one unarchive task instead of a copy loop
description:
  - Writes an uncompressed tar of the given files (each at the top level under its own name, owner root,
    mtime 0, one mode) into a new private directory on the controller and returns the tar's path.
  - With O(tree=true), the one term is a directory and the tar holds the tree under it (names relative to
    it, directories with O(dir_mode), files with O(mode)).
  - The same files give the same tar, so C(ansible.builtin.unarchive) changes nothing on a re-run.
  - Remove the tar's directory when done (C(ansible.builtin.file) with C(state=absent) on the controller).
options:
  _terms:
    description: The files, as paths on the controller (a list among them stands for its items).
    required: true
    type: list
    elements: path
  mode:
    description: Every member's mode, as an octal string.
    type: str
    default: "0644"
  tree:
    description: Archive the tree under the one directory given instead of a list of files.
    type: bool
    default: false
  dir_mode:
    description: With O(tree=true), every directory's mode, as an octal string.
    type: str
    default: "0755"
"""

EXAMPLES = r"""
- name: Make the library's archive
  ansible.builtin.set_fact:
    _lib_archive: "{{ lookup('secure_streamlit.hosting.source_archive', *paths) }}"

- name: Make an archive of a directory tree
  ansible.builtin.set_fact:
    _site_archive: "{{ lookup('secure_streamlit.hosting.source_archive', site_dir, tree=true) }}"
"""

RETURN = r"""
_raw:
  description: The tar's path on the controller (in a directory of its own, mode 0700).
  type: list
  elements: path
"""

import os
import re
import tempfile

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._source_archive import (
    SourceArchiveError,
    source_archive,
    source_tree_archive,
)


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        modes = {}
        for option in ("mode", "dir_mode"):
            value = str(self.get_option(option))
            if not re.fullmatch(r"0?[0-7]{3}", value):
                raise AnsibleLookupError(f"source_archive: {option} {value!r} is not an octal file mode such as 0644")
            modes[option] = int(value, 8)
        # A list among the terms stands for its items: lookup(..., list_of_paths) works as well.
        files = [str(item) for term in terms for item in (term if isinstance(term, list) else [term])]
        try:
            if self.get_option("tree"):
                if len(files) != 1:
                    raise AnsibleLookupError(f"source_archive: tree=true takes one directory, got {len(files)} terms")
                data = source_tree_archive(files[0], modes["mode"], modes["dir_mode"])
            else:
                data = source_archive(files, modes["mode"])
        except (SourceArchiveError, OSError) as exc:
            raise AnsibleLookupError(f"source_archive: {exc}") from exc
        directory = tempfile.mkdtemp(prefix="secure-streamlit-src-")
        path = os.path.join(directory, "files.tar")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return [path]
