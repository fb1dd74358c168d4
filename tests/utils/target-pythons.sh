#!/usr/bin/env bash
# Modules run on the managed host's Python: compile and import them on every Python from 3.8
# (ansible-core 2.19's oldest target) that this machine has, here or under ~/.pyenv.
set -euo pipefail
coll=${1:?usage: target-pythons.sh COLLECTION_DIR}
extra=""
for bin in "$HOME"/.pyenv/versions/3.*/bin; do [ -d "$bin" ] && extra="$extra:$bin"; done
export PATH="$PATH$extra"
cd "$coll"
ran=""
for v in 3.8 3.9 3.10 3.12 3.13 3.14; do  # 3.11: the full sanity run above
  if command -v "python$v" >/dev/null; then
    ansible-test sanity --venv --color no --test compile --test import --python "$v"
    ran="$ran $v"
  else
    echo "target Python $v: skipped, no python$v on this machine"
  fi
done
echo "modules compiled and imported on Python 3.11$ran"
