"""The operator's view in a browser: the status snapshot that root's timer exports, on six pages.

The platform deploys this app like any other (docs/status.md, "The status app"). It reads one file, the
snapshot mounted read-only into its container, and nothing else: no Docker socket, no log, no state, no
write anywhere. The snapshot holds no secret and no container output (the status report leaves both out).
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

SNAPSHOT = Path(os.environ.get("SECURE_STREAMLIT_STATUS_SNAPSHOT", "/run/secure-streamlit-status/status.json"))
SCHEMA = "secure-streamlit-status/1"
MAX_BYTES = 64 << 20  # the report of 20 apps is ~100 kB; a file this large is not one
OUTCOME_COLOURS = {"deployed": "#2e7d32", "unchanged": "#78909c", "failed": "#c62828"}


@st.cache_data(max_entries=2, show_spinner=False)
def _parse(data: bytes) -> dict[str, Any]:
    report = json.loads(data)
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} report")
    return report


def load_report() -> dict[str, Any]:
    """The snapshot as the timer last wrote it; a page that cannot read it says why and stops."""
    try:
        with SNAPSHOT.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES >> 20} MiB")
        return _parse(data)
    except FileNotFoundError:
        st.error(
            f"No status snapshot at {SNAPSHOT}: the status timer has not written one yet, or this container "
            "was not given it (status_app_enabled)."
        )
    except PermissionError:
        st.error(f"The status snapshot at {SNAPSHOT} is not readable by this app's user.")
    except (OSError, ValueError) as exc:
        st.error(f"The status snapshot at {SNAPSHOT} cannot be read: {exc}")
    st.stop()
    raise AssertionError  # st.stop() does not return


def when(text: Any) -> pd.Timestamp | None:
    if not isinstance(text, str):
        return None
    try:
        return pd.to_datetime(text, utc=True)
    except ValueError:
        return None


def short(sha: Any) -> str:
    return sha[:12] if isinstance(sha, str) and sha else "-"


def sha_link(app: str, sha: Any) -> str:
    """A link to that commit's place in the app's history (this app's own page: no forge needed)."""
    if not isinstance(sha, str) or not sha:
        return "-"
    return f"[`{short(sha)}`](history?app={app}&sha={sha})"


def age(report: dict[str, Any]) -> str:
    generated = when(report.get("generated_at"))
    if generated is None:
        return "unknown age"
    seconds = (pd.Timestamp.now(tz="UTC") - generated).total_seconds()
    if seconds < -60:
        return "dated in the future: check the host's clock"
    return f"{max(seconds, 0):.0f} s old" if seconds < 120 else f"{seconds / 60:.0f} min old"


def header(report: dict[str, Any]) -> None:
    verdict = report.get("verdict")
    line = f"**{report.get('host', '?')}** at {report.get('generated_at', '?')} (snapshot {age(report)})"
    if verdict == "ok":
        st.success(f"{line}: nothing needs attention")
    else:
        st.error(f"{line}: {len(report.get('attention', []))} item(s) need attention")
        for item in report.get("attention", []):
            st.markdown(f"- {item}")


def deploy_rows(report: dict[str, Any]) -> pd.DataFrame:
    rows = [
        {
            "app": app["name"],
            "time": when(deploy.get("time")),
            "sha": deploy.get("sha") or "",
            "commit": short(deploy.get("sha")),
            "outcome": deploy.get("outcome", ""),
            "requested_by": deploy.get("requested_by") or "",
            "seconds": deploy.get("seconds"),
            "step": deploy.get("step") or "",
            "reason": deploy.get("reason") or "",
            "seq": deploy.get("seq"),
        }
        for app in report.get("apps", [])
        for deploy in app.get("deploys", [])
    ]
    columns = ["app", "time", "sha", "commit", "outcome", "requested_by", "seconds", "step", "reason", "seq"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame.sort_values("time", ascending=False, ignore_index=True)


# -- pages -------------------------------------------------------------------------------------------------
def overview() -> None:
    report = load_report()
    st.title("Apps")
    header(report)
    if report.get("engine", {}).get("error"):
        st.warning(f"The container engine did not answer: {report['engine']['error']}")
    rows = []
    for app in report.get("apps", []):
        serving = app.get("serving") or {}
        container = app.get("health", {}).get("container") or {}
        last = (app.get("deploys") or [{}])[0]
        rows.append(
            {
                "app": app["name"],
                "serving": short(serving.get("sha")),
                "since": serving.get("since") or "",
                "health": app.get("health", {}).get("state", ""),
                "restarts": container.get("restarts"),
                "last deploy": f"{last.get('outcome', '-')} {short(last.get('sha'))}" if last else "-",
                "pending": short((app.get("pending") or {}).get("sha")),
                "failed commits": len(app.get("failed", [])),
                "attention": "; ".join(app.get("attention", [])),
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.markdown(" · ".join(f"[{app['name']}](history?app={app['name']})" for app in report.get("apps", [])))
    for app in report.get("apps", []):
        replicas(app)
    monitor = report.get("monitor") or {}
    if monitor.get("installed"):
        st.subheader("Monitor")
        st.markdown(
            f"last poll {monitor.get('last_poll') or '-'}, every {monitor.get('effective_interval')} s "
            f"(configured {monitor.get('interval')} s), API budget {monitor.get('budget_left')}/"
            f"{monitor.get('budget_per_hour')} left this hour ({monitor.get('mode')})"
        )


def replicas(app: dict[str, Any]) -> None:
    """A replicated app's tasks (the swarm manager's report): one row per slot, where it runs and how."""
    found = app.get("replicas")
    if not isinstance(found, dict) or found.get("missing"):
        return
    st.subheader(f"Replicas of {app['name']}")
    line = (
        f"service `{found.get('service')}`: {found.get('running_at_sha')} of {found.get('desired')} replicas "
        f"run {short(found.get('sha'))} ({found.get('running')} running)"
    )
    update = found.get("update") or {}
    if update.get("state"):
        line += f", update {update['state']}"
    (st.success if found.get("running_at_sha", 0) >= found.get("desired", 0) else st.warning)(line)
    rows = [
        {
            "slot": task.get("slot"),
            "node": task.get("node"),
            "node state": "/".join(p for p in (task.get("node_state"), task.get("node_availability")) if p),
            "task": task.get("state"),
            "healthy": task.get("healthy"),
            "commit": short(task.get("sha")),
            "port": task.get("port"),
            "since": task.get("since") or "",
            "failed before": task.get("restarts"),
            "why": task.get("error")
            or (task.get("message") if task.get("state") != "running" else "")
            or task.get("last_error")
            or "",
        }
        for task in found.get("tasks", [])
    ]
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.astype({"slot": "Int64", "port": "Int64"})  # a pending task has neither: not 0, not NaN
    st.dataframe(frame, hide_index=True, width="stretch")


def timeline() -> None:
    report = load_report()
    st.title("Deploy timeline")
    frame = deploy_rows(report)
    if frame.empty:
        st.info("No deploy recorded yet.")
        return
    left, middle, right = st.columns(3)
    apps = left.multiselect("Apps", sorted(frame["app"].unique()), placeholder="all apps")
    outcomes = middle.multiselect("Outcome", sorted(frame["outcome"].unique()), placeholder="every outcome")
    who = right.multiselect("Requested by", sorted(frame["requested_by"].unique()), placeholder="anyone")
    shown = frame
    if apps:
        shown = shown[shown["app"].isin(apps)]
    if outcomes:
        shown = shown[shown["outcome"].isin(outcomes)]
    if who:
        shown = shown[shown["requested_by"].isin(who)]
    st.caption(f"{len(shown)} of {len(frame)} deploys (the last {len(frame)} the snapshot holds)")
    colours = alt.Scale(domain=list(OUTCOME_COLOURS), range=list(OUTCOME_COLOURS.values()))
    chart = (
        alt.Chart(shown)
        .mark_point(filled=True, opacity=0.85)
        .encode(
            x=alt.X("time:T", title="time (UTC)"),
            y=alt.Y("app:N", title=None),
            color=alt.Color("outcome:N", scale=colours, title="outcome"),
            shape=alt.Shape("requested_by:N", title="requested by"),
            size=alt.Size("seconds:Q", scale=alt.Scale(range=[60, 600]), legend=None),
            tooltip=["app", "commit", "outcome", "requested_by", "seconds", "time:T", "reason"],
        )
        .properties(height=max(200, 48 * shown["app"].nunique()))
    )
    st.altair_chart(chart, width="stretch")
    durations = (
        alt.Chart(shown)
        .mark_bar(size=8)
        .encode(
            x=alt.X("time:T", title="time (UTC)"),
            y=alt.Y("seconds:Q", title="duration (s)"),
            color=alt.Color("outcome:N", scale=colours, legend=None),
            tooltip=["app", "commit", "outcome", "seconds"],
        )
        .properties(height=160)
    )
    st.altair_chart(durations, width="stretch")
    st.dataframe(
        shown.drop(columns=["sha"]),
        hide_index=True,
        width="stretch",
        column_config={"time": st.column_config.DatetimeColumn("time (UTC)", format="YYYY-MM-DD HH:mm:ss")},
    )


def history() -> None:
    report = load_report()
    apps = {app["name"]: app for app in report.get("apps", [])}
    if not apps:
        st.info("No app on this host.")
        return
    wanted = st.query_params.get("app")
    names = list(apps)
    name = st.selectbox("App", names, index=names.index(wanted) if wanted in apps else 0)
    st.query_params["app"] = name
    app = apps[name]
    st.title(f"App {name}")
    serving = app.get("serving") or {}
    container = app.get("health", {}).get("container") or {}
    st.markdown(
        f"serving {sha_link(name, serving.get('sha'))} since {serving.get('since') or '-'}, "
        f"health **{app.get('health', {}).get('state', '?')}**"
    )
    if container:
        memory = container.get("memory_bytes")
        st.caption(
            f"container {container.get('name')} {container.get('status')}, {container.get('restarts')} restarts, "
            f"limits {container.get('cpus')} cpus, {memory >> 20 if isinstance(memory, int) else '-'} MiB, "
            f"{container.get('pids_limit')} pids"
        )
    for problem in app.get("attention", []):
        st.error(problem)
    pending = app.get("pending")
    if pending:
        st.info(f"pending: {sha_link(name, pending.get('sha'))} since {pending.get('since')} ({pending.get('where')})")
    focus = st.query_params.get("sha")
    st.subheader("Deploys")
    deploys = app.get("deploys", [])
    if not deploys:
        st.write("none recorded")
    for index, deploy in enumerate(deploys):
        # The deploy before it (older) is what it replaced when it succeeded: a link to that commit.
        before = next((d for d in deploys[index + 1 :] if d.get("outcome") == "deployed"), None)
        marker = "▶ " if focus and deploy.get("sha") == focus else ""
        line = (
            f"{marker}{deploy.get('time')} · {sha_link(name, deploy.get('sha'))} · **{deploy.get('outcome')}** · "
            f"{deploy.get('seconds')} s · by {deploy.get('requested_by') or '-'}"
        )
        if before is not None and before.get("sha") != deploy.get("sha"):
            verb = "replaced" if deploy.get("outcome") == "deployed" else "while serving"
            line += f" · {verb} {sha_link(name, before.get('sha'))}"
        if deploy.get("reason"):
            line += f"  \n  {deploy['reason']}"
        st.markdown(line)
    failed = app.get("failed", [])
    if failed:
        st.subheader("Commits marked failed (never retried)")
        st.table(pd.DataFrame(failed).set_index("sha"))


def audit() -> None:
    report = load_report()
    st.title("Audit chains")
    for name, chain in (report.get("audit") or {}).items():
        text = f"**{name}**: {chain.get('message')} ({chain.get('path')})"
        (st.success if chain.get("ok") else st.error)(text)


def certificates() -> None:
    report = load_report()
    st.title("Certificates")
    certs = report.get("certificates") or []
    if not certs:
        st.info("No certificate found (a host without the edge).")
        return
    columns = ["kind", "subject", "issuer", "not_after", "days_left", "status", "serial", "path"]
    st.table(pd.DataFrame(certs).reindex(columns=columns).set_index("kind"))


def disk() -> None:
    report = load_report()
    st.title("Disk")
    found = report.get("disk") or {}
    for problem in found.get("attention", []):
        st.error(problem)
    findings = found.get("findings") or []
    if findings:
        st.subheader("Findings of the hardening role")
        st.table(pd.DataFrame(findings))
    else:
        st.success("No finding recorded by the hardening role.")
    free = found.get("free") or []
    if free:
        st.subheader("Free space")
        st.table(pd.DataFrame(free).set_index("path"))


def main() -> None:
    st.set_page_config(page_title="secure-streamlit status", layout="wide")
    pages = [
        st.Page(overview, title="Apps", url_path="apps", default=True),
        st.Page(timeline, title="Deploy timeline", url_path="timeline"),
        st.Page(history, title="App history", url_path="history"),
        st.Page(audit, title="Audit chains", url_path="audit"),
        st.Page(certificates, title="Certificates", url_path="certificates"),
        st.Page(disk, title="Disk", url_path="disk"),
    ]
    st.navigation(pages).run()
    st.caption(f"Rendered {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M:%S} UTC from {SNAPSHOT}")


main()
