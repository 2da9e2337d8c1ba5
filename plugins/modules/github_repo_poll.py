#!/usr/bin/python
"""Ansible module: read the head commits of GitHub branches (conditional requests, GraphQL batches)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: github_repo_poll
short_description: Read the head commit SHA of GitHub branches at near-zero rate-limit cost
version_added: "1.0.0"
description:
  - Reads the head commit of one or many repository branches from the GitHub API (github.com or
    GitHub Enterprise Server) and tells, for each, whether it differs from a SHA you already know.
  - With a token and more than one repository, one GraphQL query reads up to 100 heads; otherwise one
    conditional REST request per repository (C(Accept application/vnd.github.sha)).
  - Retries server errors and timeouts with exponential backoff and jitter; a rate limit fails the task
    with the time to retry.
  - Polling changes nothing on the host, so the module always reports C(changed=false) and runs normally
    in check mode.
author:
  - secure_streamlit maintainers (@secure-streamlit)
requirements:
  - python >= 3.9
  - requests
options:
  repos:
    description: The branches to read.
    type: list
    elements: dict
    required: true
    suboptions:
      repo:
        description: C(owner/name) or the repository's https URL.
        type: str
        required: true
      branch:
        description: Branch name.
        type: str
        default: main
      known_sha:
        description:
          - A 40-hex commit SHA to compare the head with (for example the deployed one).
          - Compared without regard to case.
        type: str
  api_url:
    description: REST API base URL; C(https://HOST/api/v3) for GitHub Enterprise Server.
    type: str
    default: https://api.github.com
  graphql_url:
    description: GraphQL endpoint; derived from I(api_url) when not set.
    type: str
  token:
    description:
      - A read-only token. Never logged. Defaults to the C(GITHUB_TOKEN) environment variable.
      - Without one the budget is 60 requests per hour.
    type: str
  timeout:
    description: Read timeout of each request, in seconds.
    type: float
    default: 10
attributes:
  check_mode:
    support: full
    description: The module only reads from GitHub; it runs the same in check mode.
  diff_mode:
    support: none
    description: It changes nothing, so there is nothing to show.
"""

EXAMPLES = r"""
- name: Read the heads of the apps' branches
  secure_streamlit.hosting.github_repo_poll:
    repos:
      - repo: acme/triage-app
        branch: main
        known_sha: "{{ deployed_sha }}"
      - repo: https://github.com/acme/dashboard.git
    token: "{{ vault_github_token }}"
  register: heads

- name: Deploy what moved
  ansible.builtin.debug:
    msg: "{{ item.repo }} is now at {{ item.sha }}"
  loop: "{{ heads.repos | selectattr('changed_since_known') }}"
"""

RETURN = r"""
repos:
  description: One entry per requested branch, in the order given.
  returned: success
  type: list
  elements: dict
  contains:
    repo:
      description: C(owner/name).
      type: str
      sample: acme/triage-app
    branch:
      description: The branch.
      type: str
      sample: main
    sha:
      description: The head commit, or null when it could not be read.
      type: str
      sample: 3f786850e387550fdab836ed7e6dc881de23001b
    changed_since_known:
      description:
        - Whether I(sha) differs from I(known_sha); true when no I(known_sha) was given.
        - False when the head could not be read.
      type: bool
      sample: true
    error:
      description: Why the head could not be read, or null.
      type: str
      sample: branch not found
rate_limit:
  description: The rate-limit state the last response reported.
  returned: success
  type: dict
  contains:
    limit:
      description: Requests allowed per hour.
      type: int
    remaining:
      description: Requests left in this window.
      type: int
    reset:
      description: When the window resets (epoch seconds).
      type: float
    used:
      description: Requests used in this window.
      type: int
    resource:
      description: The budget the numbers are about (C(core) for REST, C(graphql) for GraphQL).
      type: str
      sample: graphql
    counted_requests:
      description: Requests this task made that counted against the limit (an authenticated 304 does not).
      type: int
      sample: 1
retry_at:
  description: When the task failed because of a rate limit, when to ask again (epoch seconds).
  returned: failed because of a rate limit
  type: float
"""

import re

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.secure_streamlit.hosting.plugins.module_utils.github_client import (
    REQUESTS_IMPORT_ERROR,
    GitHubClient,
    GitHubError,
    RateLimitedError,
    RepoRef,
)

KNOWN_SHA_RE = re.compile(r"^[0-9a-fA-F]{40}$")


def parse_entries(module: AnsibleModule) -> list[tuple[RepoRef, str | None]]:
    """Validate every entry before any request, failing on the first bad one by its index and repo."""
    entries = []
    for index, entry in enumerate(module.params["repos"]):
        name = f"repos[{index}] ({entry['repo']!r})"
        try:
            # An explicit null branch means the default, as an absent one does.
            ref = RepoRef.parse(entry["repo"], entry["branch"] or "main")
        except ValueError as exc:
            module.fail_json(msg=f"{name}: {exc}")
        known = entry.get("known_sha")
        if known is not None and not KNOWN_SHA_RE.match(known):
            module.fail_json(msg=f"{name}: known_sha must be a 40-hex commit SHA")
        entries.append((ref, known.lower() if known else None))
    return entries


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "repos": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "repo": {"type": "str", "required": True},
                    "branch": {"type": "str", "default": "main"},
                    "known_sha": {"type": "str"},
                },
            },
            "api_url": {"type": "str", "default": "https://api.github.com"},
            "graphql_url": {"type": "str"},
            "token": {"type": "str", "no_log": True, "fallback": (env_fallback, ["GITHUB_TOKEN"])},
            "timeout": {"type": "float", "default": 10},
        },
        supports_check_mode=True,
    )
    if REQUESTS_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("requests"), exception=str(REQUESTS_IMPORT_ERROR))

    entries = parse_entries(module)
    client = GitHubClient(
        module.params["api_url"],
        module.params["token"] or None,
        graphql_url=module.params["graphql_url"],
        read_timeout=module.params["timeout"],
    )

    def rate_report() -> dict:
        return {**client.rate.as_dict(), "counted_requests": client.counted_requests}

    try:
        heads = client.heads([ref for ref, _known in entries])
    except RateLimitedError as exc:
        module.fail_json(msg=str(exc), retry_at=exc.retry_at, rate_limit=rate_report())
    except GitHubError as exc:
        module.fail_json(msg=str(exc), rate_limit=rate_report())
    rate = rate_report()

    results = []
    for ref, known in entries:
        head = heads[ref.key]
        results.append(
            {
                "repo": ref.full_name,
                "branch": ref.branch,
                "sha": head.sha,
                "changed_since_known": head.sha is not None and head.sha != known,
                "error": head.error,
            }
        )
    if all(r["error"] for r in results):
        errors = "; ".join(f"{r['repo']}@{r['branch']}: {r['error']}" for r in results)
        module.fail_json(msg=f"no branch head could be read: {errors}", repos=results, rate_limit=rate)
    module.exit_json(changed=False, repos=results, rate_limit=rate)


if __name__ == "__main__":
    main()
