#!/usr/bin/env bash
# Time the add-a-domain rerun on the lab: the FULL `ansible-playbook playbooks/lab/site.yml`
# (the lab's site.yml) with one new domain (routed to mailstore2), then the same rerun again
# (nothing to change), with the profile_tasks callback's slowest tasks. The new domain comes
# in with -e (the lab's domains plus one), so the inventory is not edited.
#   bench/add_domain.sh [extra ansible-playbook args, e.g. --limit gw1,gw2,smtpx1,...]
# Uses the PASSERELLE_LAB_* environment like scripts/lab.
set -euo pipefail
cd "$(dirname "$0")/.."
export ANSIBLE_CONFIG=$PWD/ansible.cfg
export ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks
export PROFILE_TASKS_TASK_OUTPUT_LIMIT=${PROFILE_TASKS_TASK_OUTPUT_LIMIT:-15}
PB=${PASSERELLE_VENV:-$PWD/.venv}/bin/ansible-playbook
domain=${BENCH_DOMAIN:-bench-$(date +%s).test}
extra=$(printf '{"passerelle_domains": [{"name": "static-a.test", "server": "mailstore1"}, {"name": "static-b.test", "server": "mailstore2"}, {"name": "%s", "server": "mailstore2"}]}' "$domain")
log=$(mktemp -d)/add_domain
run() {
    local name=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$PB" -i inventory/lab playbooks/lab/site.yml "$@" >"$log.$name" 2>&1 || { tail -40 "$log.$name"; exit 1; }
    t1=$(date +%s.%N)
    printf '== %s: %.1f s (%s)\n' "$name" "$(echo "$t1 - $t0" | bc)" "$(grep -A20 'PLAY RECAP' "$log.$name" | grep -oE 'changed=[0-9]+' | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"
    sed -n '/^=====/,$p' "$log.$name" | sed -n '2,16p' | sed 's/^/   /'
}
run add-domain -e "$extra" "$@"
run rerun -e "$extra" "$@"
echo "logs: $log.*"
