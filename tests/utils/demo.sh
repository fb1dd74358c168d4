#!/usr/bin/env bash
# The main job: boot the KHO lab guest, run playbooks/handover.yml against it, print the summary.
set -euo pipefail
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
"${lab[@]}" up --name "$name" | tail -n 1 > "${TMPDIR:-/tmp}/kho-demo-$$.json"
inventory=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["inventory"])' "${TMPDIR:-/tmp}/kho-demo-$$.json")
rm -f "${TMPDIR:-/tmp}/kho-demo-$$.json"
cd "$coll"
ANSIBLE_NOCOLOR=${ANSIBLE_NOCOLOR:-} ansible-playbook -i "$inventory" playbooks/handover.yml \
  -e kho_handover_kernel=/boot/vmlinuz-kho
