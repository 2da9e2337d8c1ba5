#!/usr/bin/env bash
# Backup, restore and log-forwarding figures on molecule/contingency's instances (after `molecule
# converge -s contingency`):
#   bash benchmarks/contingency_bench.sh [SIZE_MB]      (default 1024)
# 1. SIZE_MB of random (incompressible: the worst case for size) data in the app's data directory, a
#    first backup, then 1 % changed and an incremental one: time and repository growth of each;
# 2. restore of the app's data and database onto the fresh host: time;
# 3. 200 records through the journal and 200 through the deploy log: delay from write (a timestamp in
#    the record) to reception on the log host (its receive time, the first field of the stored line),
#    median and p95. The instances share the machine's clock.
# Leaves the data in place; `molecule destroy -s contingency` removes everything.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

size_mb=${1:-1024}
app=app-contingency loghost=loghost-contingency fresh=fresh-contingency
for c in $app $loghost $fresh; do
  [ "$(docker inspect -f '{{.State.Running}}' "$c" 2>/dev/null)" = true ] ||
    die "$c is not running (molecule converge -s contingency)"
done
data=/srv/streamlit/apps/hello/bench
x() { docker exec "$@"; }
seconds() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$@"; }
repo_bytes() { x $loghost du -sb /srv/restic/repo | cut -f1; }
mib() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1048576:.0f} MiB")' "$1"; }

step "Backup of $size_mb MiB of app data"
x $app sh -c "rm -rf $data && mkdir -p $data && for i in \$(seq 1 $size_mb); do head -c 1048576 /dev/urandom > $data/f\$i; done"
before=$(repo_bytes)
t0=$(date +%s.%N); x $app secure-streamlit-backup run >/dev/null; t1=$(date +%s.%N)
first=$(repo_bytes)
info "first:       $(seconds "$t0" "$t1") s, repository +$(mib $((first - before)))"
changed=$(( (size_mb + 99) / 100 ))
x $app sh -c "for i in \$(seq 1 $changed); do head -c 1048576 /dev/urandom > $data/f\$i; done"
t0=$(date +%s.%N); x $app secure-streamlit-backup run >/dev/null; t1=$(date +%s.%N)
second=$(repo_bytes)
info "incremental ($changed MiB changed): $(seconds "$t0" "$t1") s, repository +$(mib $((second - first)))"

step "Restore of the app (data and database) onto the fresh host"
x $fresh rm -rf /srv/streamlit/apps/hello
t0=$(date +%s.%N)
x $fresh secure-streamlit-restore --from-host $app --app hello >/dev/null
t1=$(date +%s.%N)
info "restore: $(seconds "$t0" "$t1") s"
[ "$(x $app sh -c "cd $data && cat * | sha256sum")" = "$(x $fresh sh -c "cd $data && cat * | sha256sum")" ] ||
  die "the restored data differs"
x $fresh rm -rf "$data"

step "Forwarding delay, write -> log host"
marker="bench-$(date +%s)"
x $app sh -c "for i in \$(seq 1 200); do logger -t bench-journal \"$marker j\$i \$(date +%s.%N)\"; sleep 0.05; done"
x $app sh -c "for i in \$(seq 1 200); do echo \"$marker f\$i \$(date +%s.%N)\" >> /var/log/streamlit/deploys.log; sleep 0.05; done"
sleep 10
x $loghost sh -c "grep -rha '$marker' /var/log/remote/$app/" | python3 -c '
import statistics, sys
from datetime import datetime
delays = {"j": [], "f": []}
for line in sys.stdin:
    parts = line.split()
    received = datetime.fromisoformat(parts[0]).timestamp()
    i = parts.index(sys.argv[1])
    delays[parts[i + 1][0]].append(received - float(parts[i + 2]))
for kind, name in (("j", "journal (logger)"), ("f", "file (deploys.log)")):
    d = sorted(delays[kind])
    if not d:
        print(f"    {name}: nothing arrived"); continue
    p95 = d[min(len(d) - 1, round(0.95 * len(d)) - 1)]
    print(f"    {name}: {len(d)} records, median {statistics.median(d) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
' "$marker"
