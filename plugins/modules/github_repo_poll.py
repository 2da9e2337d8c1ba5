#!/usr/bin/python
"""Ansible module: read the head commits of branches on GitHub (conditional requests, GraphQL batches) or on
any other git server (one git ls-remote each)."""

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
  - An entry with C(provider=git) (or a git URL on another server than GitHub) is read with one
    C(git ls-remote --heads) in a clean environment, bounded by I(timeout); the target needs git.
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
        description:
          - C(owner/name) or the repository's https URL (GitHub), or a git URL (C(https://HOST/path),
            C(ssh://[user@]HOST/path), C(user@HOST:path); provider git).
        type: str
        required: true
      provider:
        description:
          - C(github) reads through GitHub's API, C(git) with C(git ls-remote).
          - Left out, a URL on another host than github.com and I(api_url)'s means C(git); everything else
            C(github).
        type: str
        choices: [github, git]
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
  allow_file_urls:
    description: Accept C(file:///path) git URLs (a bare repository on the target; tests and labs).
    type: bool
    default: false
  timeout:
    description: Read timeout of each request (and of each C(git ls-remote)), in seconds.
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
      - repo: https://gitlab.clinic.example/data/intake.git  # provider git (another server)
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
      description: C(owner/name) (provider github) or the git URL (provider git).
      type: str
      sample: acme/triage-app
    provider:
      description: C(github) or C(git).
      type: str
      sample: github
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
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.secure_streamlit.hosting.plugins.module_utils import _app_spec
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._git_source import GitRemote, GitSource
from ansible_collections.secure_streamlit.hosting.plugins.module_utils.github_client import (
    REQUESTS_IMPORT_ERROR,
    GitHubClient,
    GitHubError,
    RateLimitedError,
    RepoRef,
)

KNOWN_SHA_RE = re.compile(r"^[0-9a-fA-F]{40}$")


def infer_provider(repo: str, api_url: str) -> str:
    """A URL on another host than github.com and the API's own (GitHub Enterprise Server) is a git server."""
    if "://" not in repo and "@" not in repo and ":" not in repo:
        return "github"  # owner/name
    api_host = (urlsplit(api_url).hostname or "").lower()
    github_hosts = {"github.com", api_host, api_host.removeprefix("api.")}
    return "github" if _app_spec.url_host(repo) in github_hosts else "git"


def parse_entries(module: AnsibleModule) -> list[tuple[RepoRef | GitRemote, str | None]]:
    """Validate every entry before any request, failing on the first bad one by its index and repo."""
    entries: list[tuple[RepoRef | GitRemote, str | None]] = []
    for index, entry in enumerate(module.params["repos"]):
        name = f"repos[{index}] ({_app_spec.shown_repo(entry['repo'])})"
        provider = entry.get("provider") or infer_provider(entry["repo"], module.params["api_url"])
        try:
            # An explicit null branch means the default, as an absent one does.
            if provider == "git":
                problem = _app_spec.git_url_problem(entry["repo"], allow_file=module.params["allow_file_urls"])
                if problem:
                    raise ValueError(f"a git URL {problem} ({_app_spec.GIT_URL_RULE})")
                ref: RepoRef | GitRemote = GitRemote(
                    entry["repo"], entry["branch"] or "main", allow_file=module.params["allow_file_urls"]
                )
            else:
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
                    "provider": {"type": "str", "choices": ["github", "git"]},
                    "branch": {"type": "str", "default": "main"},
                    "known_sha": {"type": "str"},
                },
            },
            "api_url": {"type": "str", "default": "https://api.github.com"},
            "graphql_url": {"type": "str"},
            "token": {"type": "str", "no_log": True, "fallback": (env_fallback, ["GITHUB_TOKEN"])},
            "allow_file_urls": {"type": "bool", "default": False},
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

    github_refs = [ref for ref, _ in entries if isinstance(ref, RepoRef)]
    git_refs = [ref for ref, _ in entries if isinstance(ref, GitRemote)]
    heads: dict = GitSource(timeout=module.params["timeout"]).heads(git_refs) if git_refs else {}
    try:
        heads.update(client.heads(github_refs) if github_refs else {})
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
                "repo": ref.full_name if isinstance(ref, RepoRef) else ref.url,
                "provider": "github" if isinstance(ref, RepoRef) else "git",
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
