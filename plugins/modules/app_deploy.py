#!/usr/bin/python
"""Ansible module: deploy Streamlit apps with the collection's deploy engine."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_deploy
short_description: Deploy Streamlit apps at a commit, health-gated, with a zero-downtime edge switch
description:
  - Runs the collection's deploy engine (C(plugins/module_utils/_deploy.py)) on the managed host, the same
    code the host's deployer runs for the monitor's requests.
  - For each app (or only O(name)) it decides the commit (O(sha), else the one that served before, else the
    branch head, never one that failed), fetches exactly it, builds the image, starts it beside the old
    container, waits for Streamlit's health endpoint, runs the app's script once (Streamlit's AppTest) and
    only then switches the app's nginx upstream, drains and removes the old container.
  - A container of the same commit and settings that serves already is left alone, so a second run changes
    nothing. After a reboot or an engine restart it brings back exactly the commit that served before.
  - Every outcome is appended to the hash-chained deploy audit log and answered to the monitor.
version_added: "1.1.0"
author:
  - secure_streamlit maintainers (@secure-streamlit)
options:
  apps:
    description:
      - The apps, as the C(secure_streamlit.hosting.app_specs) filter returns them (validated entries with
        their defaults filled in). Entries with a pinned C(upstream) are not managed and are skipped.
    type: list
    elements: dict
    required: true
  settings:
    description: Host-wide deploy settings (image, paths, timeouts); see the apps role's variables.
    type: dict
    required: true
  name:
    description: Deploy only this app.
    type: str
  sha:
    description: The commit to deploy (40 lower-case hex digits); needs O(name).
    type: str
  requested_by:
    description: Who asked for the deploy, for the audit record.
    type: str
    default: ansible
  remove_absent:
    description:
      - Remove the containers, images and deploy state of apps that are not in O(apps).
      - Their data directories are kept (see O(purge_data)).
      - On the swarm's first manager, also the swarm service (and its secrets) of an app whose O(apps) entry
        has one replica, once the app's own container serves (its replicas were lowered to 1).
    type: bool
    default: false
  purge_data:
    description:
      - Delete the data directories of these apps. Each must be an app name no longer in O(apps); the data
        of an app that is still deployed is never deleted this way.
    type: list
    elements: str
    default: []
  swarm:
    description:
      - On the swarm's first manager, the swarm backend's settings (C(SwarmSettings) in
        C(plugins/module_utils/_swarm_backend.py)). They are C(registry) (host and port), C(registry_user),
        C(registry_password_file) (the swarm role's root-only file, read in memory at each deploy),
        C(constraints) (app name to the placement constraints of its service) and the update and health
        settings.
      - An app with C(replicas) above 1 is then built here, started once in a throwaway container for the
        health check and the readiness gate, pushed to the registry and rolled out as the swarm service
        C(app-<name>). Without this option such an app fails at the C(swarm) step.
    type: dict
requirements:
  - The Docker SDK for Python (Debian's python3-docker) and git on the managed host.
attributes:
  check_mode:
    support: full
    description: Reports which apps would be deployed or removed; reads the branch heads, changes nothing.
  diff_mode:
    support: full
    description: Shows the serving commit of each app before and after.
"""

EXAMPLES = r"""
- name: Deploy every app that does not serve its commit with its current settings
  secure_streamlit.hosting.app_deploy:
    apps: "{{ apps | secure_streamlit.hosting.app_specs(_apps_spec_defaults) }}"
    settings: "{{ _apps_engine_settings }}"
    requested_by: site.yml
    remove_absent: true

- name: Roll one app back to an older commit
  secure_streamlit.hosting.app_deploy:
    apps: "{{ _apps_specs }}"
    settings: "{{ _apps_engine_settings }}"
    name: triage
    sha: 3f786850e387550fdab836ed7e6dc881de23001b
    requested_by: deploy.yml by alice
"""

RETURN = r"""
deploys:
  description: One outcome per app considered.
  returned: always
  type: list
  elements: dict
  contains:
    app: {description: The app., type: str}
    sha: {description: The commit., type: str}
    status: {description: "deployed, unchanged, failed, or in check mode would_deploy.", type: str}
    reason: {description: Why it failed (the step and the message) or why nothing was done., type: str}
    step: {description: "The step that failed (fetch, build, start, health, gate, switch...).", type: str}
    output_tail:
      description: "The last lines of the failing command's output (pip's error, the traceback)."
      type: list
    previous: {description: The commits that served before., type: list}
    container: {description: The container that serves now., type: str}
    seconds: {description: How long the deploy took., type: float}
  sample:
    - {app: triage, sha: 3f786850e387550fdab836ed7e6dc881de23001b, status: deployed, previous: [], seconds: 41.2}
removed:
  description: Apps whose containers, images or state were removed (O(remove_absent)).
  returned: always
  type: list
  elements: str
purged:
  description: Apps whose data directories were deleted (O(purge_data)).
  returned: always
  type: list
  elements: str
quotas:
  description:
    - One entry per app with a C(data.size) whose data directory exists. The size is enforced with a project
      quota where the file system has them (ext4 with C(prjquota), XFS with C(prjquota)); elsewhere the module
      warns once, naming the file system and the mount option needed, and the status command compares the
      usage with the size. Each entry is also recorded in C(<state_dir>/<app>/quota.json) for that command.
  returned: always
  type: list
  elements: dict
  contains:
    app: {description: The app., type: str}
    size_bytes: {description: The size in bytes., type: int}
    enforced: {description: Whether a project quota enforces it., type: bool}
    changed: {description: Whether the limit or the directory's project ids changed., type: bool}
    reason: {description: Why it is not enforced., type: str}
    project_id: {description: The app's project id., type: int}
"""

import json
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import docker

    HAS_DOCKER = True
    DOCKER_IMPORT_ERROR = None
except ImportError:
    HAS_DOCKER = False
    DOCKER_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._app_spec import SHA_RE, AppSpec, purge_errors
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._deploy import Engine, Settings, write_file_at
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._quota import (
    QuotaError,
    apply_sizes,
    parse_size,
    read_mounts,
)
from ansible_collections.secure_streamlit.hosting.plugins.module_utils._swarm_backend import SwarmBackend, SwarmSettings


def record_quota(engine: Engine, app: str, entry: dict, check_mode: bool) -> bool:
    """Write the app's quota.json for the status command; True when it changed."""
    payload = {key: entry[key] for key in ("size_bytes", "enforced", "reason", "project_id")}
    text = (json.dumps(payload, sort_keys=True) + "\n").encode()
    directory = engine.app_dir(app)
    try:
        with open(directory / "quota.json", "rb") as handle:
            if handle.read(65536) == text:
                return False
    except OSError:
        pass
    if not check_mode:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_file_at(directory, "quota.json", text, 0o600)
    return True


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "apps": {"type": "list", "elements": "dict", "required": True},
            "settings": {"type": "dict", "required": True},
            "name": {"type": "str"},
            "sha": {"type": "str"},
            "requested_by": {"type": "str", "default": "ansible"},
            "remove_absent": {"type": "bool", "default": False},
            "purge_data": {"type": "list", "elements": "str", "default": []},
            "swarm": {"type": "dict"},
        },
        required_by={"sha": "name"},
        supports_check_mode=True,
    )
    if not HAS_DOCKER:
        module.fail_json(msg=missing_required_lib("docker (python3-docker)"), exception=DOCKER_IMPORT_ERROR)
    params = module.params
    try:
        specs = [AppSpec.from_dict(entry) for entry in params["apps"]]
        settings = Settings.from_mapping(params["settings"])
        swarm_settings = SwarmSettings.from_mapping(params["swarm"]) if params["swarm"] else None
    except (TypeError, ValueError) as exc:
        module.fail_json(msg=f"app_deploy: {exc}")
    managed = [spec for spec in specs if spec.managed]
    names = {spec.name for spec in managed}
    if params["name"] is not None and params["name"] not in names:
        module.fail_json(msg=f"name {params['name'][:60]!r} is not one of the managed apps: {', '.join(sorted(names))}")
    purge_problems = purge_errors(params["purge_data"], names, label="purge_data")
    if purge_problems:
        module.fail_json(msg="; ".join(purge_problems))
    if params["sha"] is not None and not SHA_RE.fullmatch(params["sha"]):
        module.fail_json(msg="sha must be a full commit SHA (40 lower-case hex digits)")

    client = docker.from_env(timeout=600)
    swarm = SwarmBackend(swarm_settings, client) if swarm_settings is not None else None
    engine = Engine(settings, client, swarm=swarm)
    outcomes = []
    before, after = [], []
    for spec in managed:
        if params["name"] is not None and spec.name != params["name"]:
            continue
        serving = engine.load_state(spec.name)["serving"]
        outcome = engine.deploy(spec, params["sha"], requested_by=params["requested_by"], check_mode=module.check_mode)
        outcomes.append(outcome)
        before.append(f"{spec.name}: {serving['sha'] if serving else '-'}")
        after.append(f"{spec.name}: {outcome.sha if outcome.status != 'failed' else (serving or {}).get('sha', '-')}")
    removed = engine.remove_absent(names, check_mode=module.check_mode, apps=managed) if params["remove_absent"] else []
    purged = engine.purge_data(params["purge_data"], names, check_mode=module.check_mode)
    sized = [
        (spec.name, parse_size(spec.data_size) or 0)
        for spec in managed
        if spec.data_size and spec.data_mount and params["name"] in (None, spec.name)
    ]
    quotas = []
    if sized:
        try:
            applied, warnings = apply_sizes(sized, settings.data_dir, read_mounts(), check_mode=module.check_mode)
        except QuotaError as exc:
            module.fail_json(msg=f"app_deploy: {exc}")
        for warning in warnings:
            module.warn(warning)
        for entry in applied:
            quota = entry.as_dict()
            quota["changed"] = record_quota(engine, entry.app, quota, module.check_mode) or entry.changed
            quotas.append(quota)
    result = {
        "changed": any(o.changed for o in outcomes)
        or bool(removed)
        or bool(purged)
        or any(q["changed"] for q in quotas),
        "purged": purged,
        "quotas": quotas,
        "deploys": [o.as_dict() for o in outcomes],
        "removed": removed,
        "diff": {"before": "\n".join(before) + "\n", "after": "\n".join(after) + "\n"},
    }
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        message = "; ".join(
            f"Deploying {o.app} at {o.sha or '(no commit)'} failed at the {o.step} step ({o.reason})"
            + (f"; last output: {' | '.join(o.tail[-5:])}" if o.tail else "")
            for o in failed
        )
        module.fail_json(msg=message + "; the previous container keeps serving.", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
