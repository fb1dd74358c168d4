#!/usr/bin/env bash
# The main job: boot the KHO lab guest, run playbooks/handover.yml against it, print the summary.
# demo.sh live: the same on the sid guest (systemd 262, liveupdate=on), whose kho-cache.service keeps its data in
# a memfd in its fd store: the summary's live update line, and the service's own word before and after.
set -euo pipefail
flavour=(); live=${1:-}
[ "$live" = live ] && flavour=(--flavour sid --append liveupdate=on --timeout 600)
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
coll=${KHO_BUILD:?run through make demo}/ansible_collections/kexec/kho
lab=(python3 "$top/tests/lab/lab.py")
name=${KHO_LAB_NAME:-demo-$$}
why=$("${lab[@]}" unavailable)
if [ -n "$why" ]; then
  echo "demo: the KHO lab cannot run on this machine: $why" >&2
  exit 1
fi
trap '"${lab[@]}" down --name "$name"' EXIT
"${lab[@]}" up --name "$name" "${flavour[@]}" | tail -n 1 > "${TMPDIR:-/tmp}/kho-demo-$$.json"
inventory=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["inventory"])' "${TMPDIR:-/tmp}/kho-demo-$$.json")
rm -f "${TMPDIR:-/tmp}/kho-demo-$$.json"
cd "$coll"
cache_state() {  # what kho-cache.service says it found when it started
  ansible all -i "$inventory" -m ansible.builtin.command -a 'cat /run/kho-cache.state' | sed 's/^/kho-cache.service: /'
}
[ "$live" = live ] && cache_state
# sid's user space takes minutes to come back under emulation: a longer wait there
ANSIBLE_NOCOLOR=${ANSIBLE_NOCOLOR:-} ansible-playbook -i "$inventory" playbooks/handover.yml \
  -e kho_targets=all -e kho_handover_kernel=/boot/vmlinuz-kho -e kho_handover_kexec_timeout="$([ "$live" = live ] && echo 900 || echo 300)"
[ "$live" = live ] && cache_state
exit 0
