#!/usr/bin/python
"""Ansible module: publish a directory's files as a branch head in a local bare git repository."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: git_publish
short_description: Publish a directory's files as the head of a branch in a local bare git repository
version_added: "1.0.0"
description:
  - Makes the plain files of O(source) (flat, with no subdirectory and no link) the tree of the head of
    O(branch) in the bare repository O(repo), creating the repository (mode 0700) when it is missing.
  - A commit is made only when the files differ from the head's tree, on top of the head. A second run with
    the same files changes nothing and returns the same SHA.
  - The status role uses it to give the deploy engine the status app's source without a forge (a C(file://)
    URL to this repository, provider git).
author:
  - secure_streamlit maintainers (@secure-streamlit)
requirements:
  - git
options:
  source:
    description: Directory on the host whose files are published.
    type: path
    required: true
  repo:
    description: Absolute path of the bare repository.
    type: path
    required: true
  branch:
    description: The branch to publish to.
    type: str
    default: main
  commit_message:
    description: The commit message of a new commit.
    type: str
    default: Publish the files
attributes:
  check_mode:
    support: full
    description: The tree is hashed without writing anything; C(changed) says whether a commit would be made.
  diff_mode:
    support: none
    description: The commit is the change; its SHA and the one before are returned.
"""

EXAMPLES = r"""
- name: Publish the status app's source
  secure_streamlit.hosting.git_publish:
    source: /opt/secure-streamlit-status/status_app
    repo: /var/lib/secure-streamlit-status/status-app.git
  register: published
"""

RETURN = r"""
sha:
  description: The branch head after publishing (empty in check mode when a commit would be made).
  returned: always
  type: str
tree:
  description: The id of the published tree.
  returned: always
  type: str
previous:
  description: The branch head before (empty for a new repository or branch).
  returned: always
  type: str
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._git_publish import PublishError, publish


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "source": {"type": "path", "required": True},
            "repo": {"type": "path", "required": True},
            "branch": {"type": "str", "default": "main"},
            "commit_message": {"type": "str", "default": "Publish the files"},
        },
        supports_check_mode=True,
    )
    try:
        result = publish(
            Path(module.params["source"]),
            Path(module.params["repo"]),
            branch=module.params["branch"],
            message=module.params["commit_message"],
            check_mode=module.check_mode,
        )
    except PublishError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=result.changed, sha=result.sha, tree=result.tree, previous=result.previous)


if __name__ == "__main__":
    main()
