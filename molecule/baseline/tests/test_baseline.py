"""The host baseline (hardening + audit, then Docker), checked control by control in the instance.

Named controls, not a score: each test says which rule it checks. The last tests run negative.yml
against the converged instance to show that unsafe settings stop the play and leave the host as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

BASE_IMAGE = "secure-streamlit/base:bookworm"
SCENARIO_DIR = Path(__file__).resolve().parent.parent
PROJECT_DIR = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", SCENARIO_DIR.parent.parent))


@pytest.fixture(scope="module")
def sshd(host) -> dict[str, str]:
    """`sshd -T`: the configuration sshd actually runs with (lower-case keywords)."""
    out = host.check_output("sshd -T -C user=clinic-admin,host=client,addr=192.0.2.1")
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines() if " " in line}


# --- SSH ---------------------------------------------------------------------------------------


def test_sshd_runs_with_keys_only_and_no_root_login(host, sshd):
    assert host.service("ssh").is_running
    assert sshd["passwordauthentication"] == "no"
    assert sshd["kbdinteractiveauthentication"] == "no"
    assert sshd["permitrootlogin"] == "no"
    assert sshd["pubkeyauthentication"] == "yes"
    assert sshd["permitemptypasswords"] == "no"


def test_sshd_offers_only_strong_algorithms(sshd):
    assert sshd["ciphers"] == ",".join(
        [
            "chacha20-poly1305@openssh.com",
            "aes256-gcm@openssh.com",
            "aes128-gcm@openssh.com",
            "aes256-ctr",
            "aes192-ctr",
            "aes128-ctr",
        ]
    )
    assert "cbc" not in sshd["ciphers"]
    assert all(mac.endswith("-etm@openssh.com") for mac in sshd["macs"].split(","))
    assert "sha1" not in sshd["kexalgorithms"]
    assert "group14" not in sshd["kexalgorithms"]


def test_sshd_logs_key_fingerprints_and_logs_idle_sessions_off(sshd):
    assert sshd["loglevel"] == "VERBOSE"
    assert int(sshd["clientaliveinterval"]) * int(sshd["clientalivecountmax"]) == 600
    assert sshd["allowtcpforwarding"] == "no"
    assert sshd["x11forwarding"] == "no"
    assert sshd["allowgroups"] == "ssh-users"
    assert sshd["banner"] == "/etc/issue.net"


def test_sshd_config_is_root_only(host):
    config = host.file("/etc/ssh/sshd_config")
    assert (config.user, config.group, config.mode) == ("root", "root", 0o600)


# --- Banner, shells, PAM -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/etc/issue", "/etc/issue.net"])
def test_login_banner_warns_of_phi_and_monitoring(host, path):
    assert "protected health information" in host.file(path).content_string
    assert "monitored" in host.file(path).content_string


def test_idle_shells_log_out_and_cannot_lift_it(host):
    out = host.run("bash -lc 'echo $TMOUT; TMOUT=0 2>&1; echo rc=$?'")
    assert out.stdout.splitlines()[0] == "900"
    assert "readonly variable" in out.stdout + out.stderr


def test_login_defaults_set_umask_and_password_ageing(host):
    defs = host.file("/etc/login.defs").content_string
    assert "\nUMASK\t\t027\n" in defs
    assert "\nPASS_MAX_DAYS\t\t365\n" in defs
    assert "\nSHA_CRYPT_MIN_ROUNDS\t\t65536\n" in defs


def test_sha512_hashes_use_the_configured_rounds(host):
    host.run("userdel -r roundsprobe")
    host.check_output("useradd roundsprobe")
    try:
        host.check_output("echo 'roundsprobe:Kq7-vX2m!pL9zR4t' | chpasswd -c SHA512")
        assert host.check_output("getent shadow roundsprobe").split(":")[1].startswith("$6$rounds=65536$")
    finally:
        host.run("userdel -r roundsprobe")


def test_sysstat_collects_system_activity(host):
    assert 'ENABLED="true"' in host.file("/etc/default/sysstat").content_string
    assert host.service("sysstat").is_enabled
    assert host.service("sysstat-collect.timer").is_running


def test_aide_notices_a_changed_configuration_file(host):
    assert host.file("/var/lib/aide/aide.db").exists
    assert host.service("dailyaidecheck.timer").is_enabled
    # Other tests change accounts, so the database is not clean here; the probe file is, until changed.
    # --limit: only /etc/ssh is compared (the whole file system takes minutes).
    check = "aide --config /etc/aide/aide.conf --limit '^/etc/ssh' --check"
    assert "/etc/ssh/ssh_config" not in host.run(check).stdout
    host.check_output("echo '# probe' >> /etc/ssh/ssh_config")
    try:
        changed = host.run(check)
        assert changed.rc != 0
        assert "/etc/ssh/ssh_config" in changed.stdout
    finally:
        host.check_output("sed -i '/^# probe$/d' /etc/ssh/ssh_config")


def test_aide_hashes_with_sha512_only_and_skips_the_trees_that_change_by_design(host):
    conf = "aide --config /etc/aide/aide.conf"
    # --path-check names the rule that decides a path, without scanning anything.
    binary = host.check_output(f"{conf} --path-check f:/usr/bin/ls")
    assert "selective rule" in binary, binary
    assert "sha512" in binary, binary
    for weak in ("md5", "sha1", "crc32", "tiger", "haval", "gost", "whirlpool", "rmd160"):
        assert weak not in binary, binary
    assert "sha512" in host.check_output(f"{conf} --path-check f:/etc/ssh/sshd_config")
    for path in ("d:/var/lib/docker", "f:/var/lib/docker/overlay2/x", "f:/var/cache/apt/archives/x.deb"):
        assert "negative rule" in host.run(f"{conf} --path-check {path}").stdout, path


def test_a_rootkit_scan_runs_daily(host):
    assert host.package("chkrootkit").is_installed
    assert 'RUN_DAILY="true"' in host.file("/etc/chkrootkit/chkrootkit.conf").content_string
    assert host.service("chkrootkit.timer").is_enabled


def test_weak_password_is_rejected_by_pwquality(host):
    assert "pam_pwquality.so" in host.file("/etc/pam.d/common-password").content_string
    # chpasswd goes through common-password; enforce_for_root makes the checks apply to root's changes too.
    host.run("userdel -r pwprobe")
    host.check_output("useradd --create-home pwprobe")
    try:
        weak = host.run("echo 'pwprobe:Summer2026' | chpasswd")
        assert weak.rc != 0
        assert "shorter than 14 characters" in weak.stdout + weak.stderr
        assert host.run("echo 'pwprobe:c0rrect-Horse-battery-Staple-41' | chpasswd").rc == 0
    finally:
        host.run("userdel -r pwprobe")


def test_failed_logins_lock_the_account(host):
    auth = [" ".join(line.split()) for line in host.file("/etc/pam.d/common-auth").content_string.splitlines()]
    auth = [line for line in auth if line.startswith("auth ")]
    preauth = auth.index("auth requisite pam_faillock.so preauth")
    unix = next(i for i, line in enumerate(auth) if " pam_unix.so" in line)
    authfail = auth.index("auth [default=die] pam_faillock.so authfail")
    # preauth refuses a locked account before the password is checked; authfail counts a failure.
    assert preauth < unix < authfail
    assert "pam_faillock.so" in host.file("/etc/pam.d/common-account").content_string
    conf = host.file("/etc/security/faillock.conf").content_string
    assert "deny = 5" in conf
    assert "unlock_time = 900" in conf


# --- Kernel parameters and firewall --------------------------------------------------------------


def test_forwarding_stays_on_for_docker_and_network_sysctls_are_hardened(host):
    assert host.sysctl("net.ipv4.ip_forward") == 1
    assert host.sysctl("net.ipv4.conf.all.accept_redirects") == 0
    assert host.sysctl("net.ipv4.conf.all.send_redirects") == 0
    assert host.sysctl("net.ipv4.tcp_syncookies") == 1
    assert host.sysctl("net.ipv4.conf.all.log_martians") == 1


def test_kernel_wide_sysctls_are_kept_for_boot(host):
    # A container cannot set the host kernel's parameters; the file makes them apply at the host's boot.
    conf = host.file("/etc/sysctl.d/90-secure-streamlit.conf").content_string
    for line in ["kernel.kptr_restrict=2", "kernel.yama.ptrace_scope=1", "fs.suid_dumpable=0", "net.ipv4.ip_forward=1"]:
        assert line in conf


def test_firewall_drops_input_except_ssh_web_and_sandbox_ports(host):
    ruleset = json.loads(host.check_output("nft -j list table inet secure_streamlit"))["nftables"]
    chain = next(item["chain"] for item in ruleset if "chain" in item)
    assert (chain["hook"], chain["policy"]) == ("input", "drop")
    text = host.check_output("nft list table inet secure_streamlit")
    assert "tcp dport 22 accept" in text
    assert "tcp dport { 80, 443, 9443 } accept" in text


def test_firewall_leaves_dockers_own_rules(host):
    chains = host.check_output("iptables -S")
    assert "DOCKER" in chains
    assert host.service("secure-streamlit-firewall").is_enabled


def test_docker_publishes_ports_and_runs_containers_behind_the_firewall(host):
    if host.run(f"docker image inspect {BASE_IMAGE}").rc != 0:
        host.check_output("docker load -q -i /opt/images/base.tar")
    name = "baseline-port-probe"
    host.run(f"docker rm -f {name}")
    host.check_output(f"docker run -d --name {name} -p 18090:8000 {BASE_IMAGE} python3 -m http.server 8000")
    try:
        address = host.check_output("hostname -I").split()[0]
        fetch = (
            "import sys,time,urllib.request\n"
            "for _ in range(30):\n"
            "    try: print(urllib.request.urlopen(sys.argv[1], timeout=2).status); break\n"
            "    except Exception: time.sleep(0.5)\n"
        )
        # Through DNAT and forward (Docker's chains), not the input chain this role filters.
        assert host.check_output(f"python3 -c '{fetch}' http://{address}:18090/") == "200"
    finally:
        host.run(f"docker rm -f {name}")


# --- Updates and time -------------------------------------------------------------------------------


def test_security_updates_install_daily(host):
    assert host.package("unattended-upgrades").is_installed
    periodic = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    assert host.service("apt-daily-upgrade.timer").is_enabled


def test_time_sync_is_enabled(host):
    assert host.service("systemd-timesyncd").is_enabled


# --- Disk checks ---------------------------------------------------------------------------------------


def test_warn_mode_records_the_unencrypted_data_where_an_auditor_looks(host):
    findings_file = host.file("/var/log/secure-streamlit/findings.json")
    assert (findings_file.user, findings_file.group, findings_file.mode) == ("root", "adm", 0o640)
    report = json.loads(findings_file.content_string)
    assert report["encryption_check"] == "warn"
    encryption = [f for f in report["findings"] if f["check"] == "encryption_at_rest"]
    assert {f["path"] for f in encryption} >= {"/srv/streamlit", "/var/lib/docker", "/var/log"}
    assert all("hardening_encryption_check" in f["message"] for f in encryption)
    journal = host.check_output("journalctl -t secure-streamlit-hardening --no-pager -o cat")
    assert "not encrypted at rest" in journal


# --- Audit -----------------------------------------------------------------------------------------------


def test_audit_rules_compile_and_are_current(host):
    # auditd cannot run in a container; the kernel side is tested on the VM (benchmarks/auditctl_load.sh).
    out = host.run("augenrules --check")
    assert out.rc == 0, out.stderr
    assert "No change" in out.stdout + out.stderr
    rules = host.file("/etc/audit/audit.rules").content_string
    for expected in [
        "-w /etc/shadow -p wa -k identity",
        "-w /etc/sudoers -p wa -k scope",
        "-w /etc/ssh/sshd_config -p wa -k sshd",
        "-S adjtimex,settimeofday,clock_settime -k time-change",
        "-S init_module,finit_module,delete_module -k modules",
        "-w /srv/streamlit -p wa -k phi-data",
        "-w /etc/github-repo-monitor -p wa -k monitor-config",
        "-F path=/usr/bin/passwd -F perm=x -F auid>=1000 -F auid!=unset -k privileged",
        "-w /etc/streamlit-edge -p wa -k edge-tls",
        "-w /etc/nginx -p wa -k nginx",
        "-w /etc/streamlit-apps -p wa -k app-secrets",
        "-w /opt/secure-streamlit-deployer -p wa -k deployer",
        "-w /var/lib/streamlit-apps -p wa -k deployer",
        "-w /etc/systemd/system -p wa -k systemd",
        "-w /usr/lib/systemd/system -p wa -k systemd",
        "-w /etc/crontab -p wa -k cron",
        "-w /etc/cron.d -p wa -k cron",
        "-w /var/spool/cron -p wa -k cron",
    ]:
        assert expected in rules, expected


def test_people_are_recorded_failing_deleting_and_running_commands_as_root(host):
    rules = host.file("/etc/audit/audit.rules").content_string.splitlines()
    people = "-F auid>=1000 -F auid!=unset"
    for arch in ["b64", "b32"]:
        for errno in ["EACCES", "EPERM"]:
            assert any(
                line.startswith(f"-a always,exit -F arch={arch} -S ")
                and "openat" in line
                and line.endswith(f"-F exit=-{errno} {people} -k access")
                for line in rules
            ), (arch, errno)
        assert any(
            line.startswith(f"-a always,exit -F arch={arch} -S ")
            and "unlinkat" in line
            and "renameat" in line
            and line.endswith(f"{people} -k delete")
            for line in rules
        ), arch
        assert f"-a always,exit -F arch={arch} -S execve,execveat -F euid=0 {people} -k root-cmd" in rules
    # The kernel keys a record with the first rule that matches: the watches and the setuid rules come first.
    first_broad = min(i for i, line in enumerate(rules) if line.endswith(("-k access", "-k delete", "-k root-cmd")))
    last_specific = max(i for i, line in enumerate(rules) if line.startswith("-w ") or "-k privileged" in line)
    assert last_specific < first_broad


def test_phi_data_watch_follows_the_hardening_roles_app_data_dir(host):
    rules = host.file("/etc/audit/audit.rules").content_string
    findings = json.loads(host.file("/var/log/secure-streamlit/findings.json").content_string)
    # One setting: the directory the disk check requires to be encrypted is the one audited as PHI.
    assert "/srv/streamlit" in findings["checked_paths"]
    assert [line for line in rules.splitlines() if line.endswith("-k phi-data")] == [
        "-w /srv/streamlit -p wa -k phi-data"
    ]


def test_every_setuid_program_has_a_rule(host):
    programs = host.check_output("find /usr /opt -xdev -type f -perm /6000").split()
    rules = host.file("/etc/audit/rules.d/70-secure-streamlit-privileged.rules").content_string
    assert programs
    for program in programs:
        assert f"-F path={program} -F perm=x" in rules


def test_docker_paths_of_cis_1_1_are_watched_with_the_live_containerd_socket(host):
    rules = host.file("/etc/audit/rules.d/60-secure-streamlit-docker.rules").content_string
    for path in ["/usr/sbin/dockerd", "/var/lib/docker", "/etc/docker", "/etc/docker/daemon.json", "/usr/bin/runc"]:
        if host.file(path).exists:
            # The role watches the file itself: on merged-/usr hosts /usr/bin/runc is a link to /usr/sbin/runc.
            real = host.check_output(f"readlink -f {path}")
            assert f"-w {real} " in rules, path
    sockets = host.check_output("ss -xlnH | awk '{print $5}' | grep containerd.sock$ | head -1")
    assert sockets
    assert f"-w {sockets} -p rwxa -k docker" in rules


def test_auditd_keeps_every_log(host):
    conf = host.file("/etc/audit/auditd.conf").content_string
    assert "\nmax_log_file_action = keep_logs\n" in conf
    assert host.service("auditd").is_enabled


def test_journal_is_persistent(host):
    assert "Storage=persistent" in host.file("/etc/systemd/journald.conf.d/50-secure-streamlit.conf").content_string
    assert host.file("/var/log/journal").is_directory
    assert host.run("ls /var/log/journal/*/system.journal").rc == 0


def test_journal_retention_is_set_not_left_to_journalds_size_cap(host):
    # What journald runs with (merged drop-ins), not only what the file says.
    conf = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    settings = dict(line.split("=", 1) for line in conf.splitlines() if "=" in line and not line.startswith(("#", ";")))
    assert settings["SystemMaxUse"] == "4G"
    assert settings["MaxRetentionSec"] == "1year"
    assert settings["MaxFileSec"] == "1month"
    # rsyslog reads the journal by cursor instead (imjournal): forwarding drops records when it lags.
    assert settings["ForwardToSyslog"] == "no"


def test_ssh_logins_and_lockouts_land_in_auth_log(host):
    # A refused SSH login (sshd, facility auth) and a faillock message (pam_faillock logs as authpriv).
    assert host.service("rsyslog").is_running
    marker = f"probe-{os.getpid()}"
    host.run(f"ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o ConnectTimeout=10 {marker}@127.0.0.1 true")
    host.check_output(f"logger -p authpriv.notice -t pam_faillock 'Consecutive login failures for user {marker}'")
    # rsyslog writes asynchronously: wait for it, bounded.
    found = host.run(
        f"for i in $(seq 60); do grep -q 'Invalid user {marker}' /var/log/auth.log"
        f" && grep -q 'pam_faillock.*{marker}' /var/log/auth.log && exit 0; sleep 1; done; exit 1"
    )
    assert found.rc == 0, host.run("tail -n 20 /var/log/auth.log").stdout
    log = host.file("/var/log/auth.log")
    assert (log.user, log.group, log.mode) == ("root", "adm", 0o640)


def test_records_logged_while_rsyslog_is_stalled_all_reach_auth_log(host):
    # A stalled rsyslog (a starved CPU, a slow disk): journald's forwarding queue holds 10 records in a
    # container, so with forwarding 11 of these 100 arrived; read by cursor, all do.
    marker = f"stall-{os.getpid()}"
    host.check_output("systemctl kill --signal=SIGSTOP rsyslog")
    try:
        host.check_output(f"for i in $(seq 1 100); do logger -p authpriv.notice -t stall-test '{marker}-'$i; done")
    finally:
        host.check_output("systemctl kill --signal=SIGCONT rsyslog")
    # rsyslog writes asynchronously: wait for it, bounded.
    host.run(f"for i in $(seq 60); do [ $(grep -c '{marker}-' /var/log/auth.log) -ge 100 ] && exit 0; sleep 1; done")
    got = set(host.run(f"grep -oE '{marker}-[0-9]+' /var/log/auth.log").stdout.split())
    assert got == {f"{marker}-{i}" for i in range(1, 101)}, f"{len(got)} of 100 arrived"


@pytest.mark.parametrize("name", ["streamlit-apps", "nginx", "rsyslog"])
def test_logs_are_archived_six_years(host, name):
    conf = host.file(f"/etc/logrotate.d/{name}").content_string
    assert "rotate 2192" in conf
    for directive in ["daily", "compress", "dateext", "olddir archive"]:
        assert f"    {directive}\n" in conf
    assert "maxage" not in conf


def test_auth_log_is_rotated_by_the_six_year_set_only(host):
    conf = host.file("/etc/logrotate.d/rsyslog").content_string
    assert "/var/log/auth.log" in conf
    assert "rotate 2192" in conf
    assert "rotate 4\n" not in conf


def test_logrotate_accepts_the_whole_configuration_without_duplicates(host):
    out = host.run("logrotate --debug /etc/logrotate.conf")
    assert out.rc == 0, out.stderr
    assert "duplicate log entry" not in out.stderr


# --- Re-runs ---------------------------------------------------------------------------------------------


def test_a_rerun_more_than_an_hour_after_the_last_changes_nothing(host):
    # As after a first converge that took over an hour (seen under load): the package lists are older than
    # cache_valid_time, so every role refreshes them again, and the mirror has published new ones meanwhile
    # (the removed InRelease files are fetched again). That changes no package: changed=0.
    host.check_output(
        "rm -f /var/lib/apt/lists/*_InRelease; touch -d '2 hours ago' /var/lib/apt/lists;"
        " if [ -e /var/lib/apt/periodic/update-success-stamp ]; then"
        " touch -d '2 hours ago' /var/lib/apt/periodic/update-success-stamp; fi"
    )
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(PROJECT_DIR / "collections"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
    )
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            str(SCENARIO_DIR / "converge.yml"),
            "--tags",
            "hardening_ssh,audit_install,docker_install",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:]
    refreshes = [
        task["hosts"]["instance-baseline"]
        for task in report["plays"][0]["tasks"]
        if task["task"]["name"].endswith("Refresh the package lists when they are older than an hour")
    ]
    assert len(refreshes) == 3
    assert not any(r.get("skipped") for r in refreshes)
    # The first one really fetched new lists (the old code reported exactly this as a change).
    assert refreshes[0].get("cache_updated") is True
    changed = [
        task["task"]["name"]
        for task in report["plays"][0]["tasks"]
        if task["hosts"]["instance-baseline"].get("changed")
    ]
    assert changed == []
    assert report["stats"]["instance-baseline"]["changed"] == 0


# --- Refusals (negative.yml against this instance) -----------------------------------------------------


def run_negative(case: str, tags: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(PROJECT_DIR / "collections"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
        ANSIBLE_CALLBACK_RESULT_FORMAT="yaml",
    )
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            str(SCENARIO_DIR / "negative.yml"),
            "--tags",
            tags,
            "-e",
            f"negative_case={case}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )


def flat(result: subprocess.CompletedProcess[str]) -> str:
    """The play's output with line wrapping undone."""
    return " ".join(result.stdout.split())


def test_broken_sshd_option_is_caught_before_it_reaches_sshd(host):
    before = host.file("/etc/ssh/sshd_config").sha256sum
    result = run_negative("broken_sshd", "hardening_preflight,hardening_ssh")
    assert result.returncode != 0
    assert "failed to validate" in flat(result)
    assert "Bad configuration option: NoSuchOption" in flat(result)
    assert host.file("/etc/ssh/sshd_config").sha256sum == before
    assert host.service("ssh").is_running


def test_unencrypted_data_stops_the_play_in_fail_mode(host):
    before = host.file("/etc/issue").sha256sum
    result = run_negative("encryption_fail", "hardening_preflight,hardening_disk,hardening_banner")
    assert result.returncode != 0
    assert "Stop when data or logs are not encrypted at rest" in flat(result)
    assert "The data directory /srv/streamlit is on the mount /" in flat(result)
    assert "set hardening_encryption_check: warn" in flat(result)
    assert "changed=0" in flat(result)
    assert host.file("/etc/issue").sha256sum == before


def test_ssh_lockout_guard_refuses_when_no_admin_has_a_key(host):
    before = host.file("/etc/ssh/sshd_config").sha256sum
    result = run_negative("lockout", "hardening_preflight,hardening_ssh")
    assert result.returncode != 0
    assert "Fail when turning passwords off would lock every admin out" in flat(result)
    assert "hardening_ssh_admin_users" in flat(result)
    assert host.file("/etc/ssh/sshd_config").sha256sum == before
