#!/usr/bin/env bash
# Proves that the audit role's rules load into a real kernel. auditd cannot run in a container (audit
# belongs to the initial namespaces), so molecule only checks the files (`augenrules --check`); this
# script takes the rules the role compiled in the molecule/baseline instance (/etc/audit/audit.rules)
# and loads them into THIS machine's kernel with `auditctl -R`, run from this machine (root, initial
# namespaces), lists them with `auditctl -l`, then restores the kernel's previous rules and settings.
#   bash benchmarks/auditctl_load.sh [INSTANCE]     (default instance-baseline; see benchmarks/lynis.sh)
# auditctl (and libauparse) come from the instance; the VM has libaudit1, as every Debian: nothing is
# installed here. Rules whose watched path has no parent directory on this machine (a setuid program
# that only the instance has) cannot be placed here and are listed as skipped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

INSTANCE=${1:-instance-baseline}
[ "$(id -u)" = 0 ] || die "run as root: auditctl needs CAP_AUDIT_CONTROL in the initial namespaces"
docker inspect "$INSTANCE" >/dev/null 2>&1 || die "no $INSTANCE: run benchmarks/lynis.sh (or molecule converge -s baseline) first"

work=$(mktemp -d)
docker cp -L "$INSTANCE:/usr/sbin/auditctl" "$work/auditctl"
# libauparse comes with auditd, which this machine does not have; libaudit1 it has.
lib=$(docker exec "$INSTANCE" sh -c 'ldd /usr/sbin/auditctl | awk "/libauparse/ {print \$3}"')
docker cp -L "$INSTANCE:$lib" "$work/$(basename "$lib")"
docker cp -L "$INSTANCE:/etc/audit/audit.rules" "$work/audit.rules"
auditctl() { LD_LIBRARY_PATH="$work" "$work/auditctl" "$@"; }

step "Kernel audit status before"
auditctl -s | tee "$work/status.before" | sed 's/^/    /'
value() { awk -v k="$1" '$1 == k {print $2}' "$work/status.before"; }
[ "$(value enabled)" != 2 ] || die "the kernel's audit rules are immutable (-e 2) until reboot: nothing to test"
auditctl -l >"$work/rules.before"

restore() {
  auditctl -D >/dev/null
  if ! grep -qx 'No rules' "$work/rules.before"; then auditctl -R "$work/rules.before" >/dev/null; fi
  auditctl -b "$(value backlog_limit)" -f "$(value failure)" --backlog_wait_time "$(value backlog_wait_time)" \
    -e "$(value enabled)" >/dev/null
  info "restored: $(auditctl -l | grep -vcx 'No rules') rules, enabled $(value enabled)"
  rm -rf "$work"
}
trap restore EXIT

step "Loading the role's rules ($(grep -c '^-[aw]' "$work/audit.rules") rules) into this kernel"
: >"$work/skipped"
while IFS= read -r line; do
  path=$(sed -nE 's/^-w ([^ ]+).*/\1/p; s/^-a .*-F path=([^ ]+).*/\1/p' <<<"$line")
  if [ -n "$path" ] && [ ! -d "$(dirname "$path")" ]; then
    echo "$line" >>"$work/skipped"
  else
    echo "$line"
  fi
done <"$work/audit.rules" >"$work/load.rules"
# No -c: any rule the kernel refuses fails the run.
auditctl -R "$work/load.rules" >"$work/load.out"
loaded=$(auditctl -l | grep -vcx 'No rules' || true)
expected=$(grep -c '^-[aw]' "$work/load.rules")
info "loaded $loaded rules (expected $expected); skipped $(wc -l <"$work/skipped") (parent directory absent here):"
sed 's/^/      /' "$work/skipped"

step "Rules by key (auditctl -l)"
auditctl -l | grep -oE '(key=|-k )[^ ]+' | sed 's/^-k /key=/' | sort | uniq -c | sed 's/^/    /'
info "status while loaded: $(grep -E '^(enabled|backlog_limit|failure)' <(auditctl -s) | tr '\n' ' ')"
[ "$loaded" -eq "$expected" ] || die "the kernel holds $loaded rules, expected $expected"
# From a file: `auditctl -l | grep -q` fails under pipefail when grep exits before auditctl has written all.
auditctl -l >"$work/rules.loaded"
grep -q -- '-k docker\|key=docker' "$work/rules.loaded" || die "no docker rule loaded"
info "OK: every rule the role wrote (and this machine can hold) is in the kernel"
