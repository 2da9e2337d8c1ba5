"""Contingency across three hosts: restic backups over SFTP to the log host and their restore onto a fresh
host (files by hash, rows by count), and the app host's records forwarded over RELP/TLS to the log host
across an outage with none lost.

The hosts are the scenario's instances (molecule.yml); every step is the installed units and commands,
run as root on the host, the outage a real cut of the log host's network (`docker network disconnect`).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import uuid

import pytest
import testinfra

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
PASSWORD = "molecule-Restic-NeverLogged-7f3a"  # the scenario's made-up password
NETWORK = "contingency"
DATA = "/srv/streamlit/apps/hello"
STATE = "/var/lib/secure-streamlit-backup/state.json"
PSQL = "runuser -u postgres -- psql -X -q -t -A -d app_hello"
ROWS = 5000
RECORDS = 200
# Generous bounds for a loaded machine: nothing is asserted about speed, only that it arrives.
ARRIVAL_TIMEOUT = 600


def host_of(name: str):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=INVENTORY)


@pytest.fixture(scope="module")
def app():
    return host_of("app-contingency")


@pytest.fixture(scope="module")
def loghost():
    return host_of("loghost-contingency")


@pytest.fixture(scope="module")
def fresh():
    return host_of("fresh-contingency")


def ok(host, command: str) -> str:
    result = host.run(command)
    assert result.rc == 0, f"{command}: {result.stderr or result.stdout}"
    return result.stdout


def sql(host, query: str) -> str:
    return ok(host, f"{PSQL} -c {shlex.quote(query)}").strip()


COUNT = "SELECT count(*) FROM visits"
CHECKSUM = "SELECT md5(string_agg(id || note, ',' ORDER BY id)) FROM visits"


def hashes(host, root: str) -> dict[str, str]:
    out = ok(host, f"cd {root} && find . -type f -print0 | sort -z | xargs -0 sha256sum")
    return {line.split(None, 1)[1]: line.split(None, 1)[0] for line in out.splitlines()}


@pytest.fixture(scope="module")
def backed_up(app):
    """App data and rows on the app host, then one run of the installed backup service."""
    ok(app, f"install -d -m 0750 {DATA}/uploads")
    ok(app, f"head -c 3000000 /dev/urandom > {DATA}/uploads/scan.bin && echo 'patient 1' > {DATA}/notes.txt")
    sql(app, "CREATE TABLE IF NOT EXISTS visits (id int PRIMARY KEY, note text)")
    sql(app, "TRUNCATE visits")
    sql(app, "INSERT INTO visits SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    ok(app, "systemctl start secure-streamlit-backup.service")
    return {
        "files": hashes(app, DATA),
        "rows": int(sql(app, COUNT)),
        "checksum": sql(app, CHECKSUM),
    }


def test_the_backup_service_records_success_and_prunes_nothing_it_needs(app, backed_up):
    state = json.loads(ok(app, f"cat {STATE}"))
    assert state["backup"]["ok"], state["backup"]["error"]
    assert state["backup"]["databases"] == ["app_hello"]
    assert DATA in state["backup"]["platform_paths"]
    assert ok(app, f"stat -c %a {STATE}").strip() == "600"
    assert ok(app, "ls -A /srv/streamlit/backup-staging/db").strip() == ""
    status = app.run("secure-streamlit-backup status")
    assert "backup: ok" in status.stdout
    # Before the first check it asks for attention (exit code 1), and says why.
    assert (status.rc == 1) == ("attention: no check has run yet" in status.stdout)


def test_the_repository_is_encrypted_and_checked_on_its_own_timer(app, loghost, backed_up):
    ok(app, "systemctl start secure-streamlit-backup-check.service")
    state = json.loads(ok(app, f"cat {STATE}"))
    assert state["check"]["ok"], state["check"]["error"]
    assert app.run("secure-streamlit-backup status").rc == 0
    # What the backup host stores is ciphertext: the data's plain text is nowhere in it.
    assert loghost.run("grep -rl 'patient 1' /srv/restic/repo").rc == 1
    timers = ok(app, "systemctl list-timers --all --no-legend secure-streamlit-backup*")
    assert "secure-streamlit-backup.timer" in timers
    assert "secure-streamlit-backup-check.timer" in timers


def test_the_password_is_root_only_and_printed_nowhere(app, backed_up):
    assert ok(app, "stat -c '%a %U' /etc/secure-streamlit/backup/repository.password").strip() == "600 root"
    assert ok(app, "stat -c '%a' /etc/secure-streamlit/backup").strip() == "700"
    journal = ok(app, "journalctl --no-pager -u secure-streamlit-backup -u secure-streamlit-backup-check")
    assert PASSWORD not in journal
    assert app.run(f"grep -rl -- '{PASSWORD}' /var/log /var/lib/secure-streamlit-backup").rc == 1
    unit = ok(app, "systemctl cat secure-streamlit-backup.service")
    assert PASSWORD not in unit
    assert "Environment" not in unit


def test_restore_onto_a_fresh_host_gives_identical_files_and_rows(app, fresh, backed_up):
    assert fresh.run(f"test -e {DATA}/notes.txt").rc == 1
    assert fresh.run(f"{PSQL} -c {shlex.quote(COUNT)}").rc != 0
    out = ok(fresh, "secure-streamlit-restore --from-host app-contingency --app hello --platform")
    assert "load app_hello: done" in out
    assert hashes(fresh, DATA) == backed_up["files"]
    assert int(sql(fresh, COUNT)) == backed_up["rows"] == ROWS
    assert sql(fresh, CHECKSUM) == backed_up["checksum"]
    # The restored table belongs to the app's role, as on the host it came from.
    assert sql(fresh, "SELECT tableowner FROM pg_tables WHERE tablename = 'visits'") == "app_hello"


def test_wipe_and_restore_on_the_app_host_from_a_named_snapshot(app, backed_up):
    snapshots = json.loads(ok(app, "secure-streamlit-backup snapshots --json"))
    platform = [s for s in snapshots if s.get("tags") == ["platform"] and s["hostname"] == "app-contingency"]
    snapshot = platform[-1]["short_id"]
    ok(app, f"rm -rf {DATA}")
    sql(app, "DROP TABLE visits")
    ok(app, f"secure-streamlit-restore --snapshot {snapshot} --app hello")
    assert hashes(app, DATA) == backed_up["files"]
    assert int(sql(app, COUNT)) == ROWS
    assert sql(app, CHECKSUM) == backed_up["checksum"]


def test_a_bad_restore_request_changes_nothing(app, backed_up):
    result = app.run("secure-streamlit-restore --app ghost")
    assert result.rc == 2
    assert "apps[0] ('ghost') is not an app this host backs up" in result.stderr
    assert hashes(app, DATA) == backed_up["files"]


# -- the audit trail off the host ----------------------------------------------------------------------------
def received(loghost, marker: str) -> set[str]:
    out = loghost.run(f"grep -rhoaE -- '{marker}-f?[0-9]+' /var/log/remote/app-contingency/")
    return set(out.stdout.split())


def wait_for(loghost, marker: str, count: int) -> set[str]:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    got = received(loghost, marker)
    while len(got) < count and time.monotonic() < deadline:
        time.sleep(2)
        got = received(loghost, marker)
    return got


def docker(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, capture_output=True)


def test_the_journal_and_the_files_arrive_on_the_log_host(app, loghost):
    marker = f"ship-{uuid.uuid4().hex[:8]}"
    ok(app, f"logger -t sshd-test '{marker}-1'")
    ok(app, f'echo \'{{"event": "deploy_deployed", "note": "{marker}-2"}}\' >> /var/log/streamlit/deploys.log')
    ok(app, f"echo 'type=USER_AUTH msg=audit(1.0:2): {marker}-3' >> /var/log/audit/audit.log")
    got = wait_for(loghost, marker, 3)
    assert got == {f"{marker}-1", f"{marker}-2", f"{marker}-3"}
    files = ok(loghost, "ls /var/log/remote/app-contingency/").split()
    assert {"sshd-test.log", "streamlit-deploy.log", "auditd.log"} <= set(files)
    assert ok(loghost, "stat -c '%a %U %G' /var/log/remote/app-contingency/auditd.log").strip() == "640 root adm"


def test_records_written_during_an_outage_all_arrive_after_it(app, loghost):
    marker = f"outage-{uuid.uuid4().hex[:8]}"
    docker("network", "disconnect", NETWORK, "loghost-contingency")
    try:
        for start in range(0, RECORDS, 50):
            batch = " ".join(str(i) for i in range(start + 1, start + 51))
            ok(app, f'for i in {batch}; do logger -t outage-test "{marker}-$i"; done')
        ok(app, f'for i in $(seq 1 {RECORDS}); do echo "deploy {marker}-f$i" >> /var/log/streamlit/deploys.log; done')
        time.sleep(5)
        assert len(received(loghost, marker)) == 0
    finally:
        docker("network", "connect", NETWORK, "loghost-contingency")
    got = wait_for(loghost, marker, 2 * RECORDS)
    want = {f"{marker}-{i}" for i in range(1, RECORDS + 1)} | {f"{marker}-f{i}" for i in range(1, RECORDS + 1)}
    assert want - got == set(), f"lost {len(want - got)} of {len(want)}"


def test_records_written_while_rsyslog_stalls_or_is_stopped_all_arrive(app, loghost):
    # rsyslog reads the journal by cursor (the audit role's imjournal): what it has not read yet waits in
    # the journal, whether rsyslog is starved (SIGSTOP) or stopped (a restart, an upgrade).
    marker = f"stall-{uuid.uuid4().hex[:8]}"
    ok(app, "systemctl kill --signal=SIGSTOP rsyslog")
    try:
        ok(app, f'for i in $(seq 1 100); do logger -t stall-test "{marker}-$i"; done')
    finally:
        ok(app, "systemctl kill --signal=SIGCONT rsyslog")
    ok(app, "systemctl stop rsyslog")
    try:
        ok(app, f'for i in $(seq 101 200); do logger -t stall-test "{marker}-$i"; done')
    finally:
        ok(app, "systemctl start rsyslog")
    got = wait_for(loghost, marker, 200)
    want = {f"{marker}-{i}" for i in range(1, 201)}
    assert want - got == set(), f"lost {len(want - got)} of {len(want)}"


INTRUDER_CONF = """
global(workDirectory="/root/intruder/spool")
module(load="imfile" mode="polling" pollingInterval="1")
module(load="omrelp")
input(type="imfile" File="/root/intruder/in.log" Tag="intruder:" Ruleset="out")
ruleset(name="out") {
  action(type="omrelp" target="loghost-contingency" port="2514" tls="on"
         tls.caCert="/etc/rsyslog-logship/ca.crt" tls.myCert="/root/intruder/intruder.crt"
         tls.myPrivKey="/root/intruder/intruder.key" tls.authMode="name" tls.permittedPeer=["loghost-contingency"]
         action.resumeRetryCount="-1" action.resumeInterval="1")
}
"""


def test_the_log_host_refuses_a_peer_without_a_certificate_of_its_ca(app, loghost):
    """A second rsyslogd on the app host, with a self-signed certificate: its records never land, while
    the app host's own (sent after them) do."""
    marker = f"intruder-{uuid.uuid4().hex[:8]}"
    pki = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"] + "/pki"
    ok(app, "rm -rf /root/intruder && install -d -m 0700 /root/intruder /root/intruder/spool")
    for name in ("intruder.crt", "intruder.key"):
        docker("cp", f"{pki}/{name}", f"app-contingency:/root/intruder/{name}")
    ok(app, f"cat > /root/intruder/rsyslog.conf <<'EOF'\n{INTRUDER_CONF}\nEOF")
    ok(app, "touch /root/intruder/in.log")
    ok(app, "rsyslogd -f /root/intruder/rsyslog.conf -i /root/intruder/pid")
    try:
        ok(app, f"for i in 1 2 3; do echo '{marker}-'$i >> /root/intruder/in.log; done")
        time.sleep(10)
        ok(app, f"logger -t after-intruder '{marker}-9999'")
        assert wait_for(loghost, marker, 1) == {f"{marker}-9999"}
        time.sleep(5)
        assert received(loghost, marker) == {f"{marker}-9999"}
    finally:
        app.run("kill $(cat /root/intruder/pid)")
        app.run("rm -rf /root/intruder")


def test_the_log_host_keeps_six_years(loghost):
    rotate = ok(loghost, "cat /etc/logrotate.d/secure-streamlit-logship")
    assert "rotate 2192" in rotate
    assert "daily" in rotate
    ok(loghost, "logrotate --debug /etc/logrotate.d/secure-streamlit-logship")
