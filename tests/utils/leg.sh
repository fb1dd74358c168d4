#!/usr/bin/env bash
# One more ansible-core leg of the test matrix: its own venv (from REQUIREMENTS, with PYTHON), its own
# layout, ansible-test sanity on that Python, then the unit tests.  Skipped, saying so, without PYTHON.
# With --venv-only, only the venv (the lab's lean tier runs the role with the oldest leg's ansible-core).
#   leg.sh NAME PYTHON VENV REQUIREMENTS COLLECTION_DIR [--venv-only]
set -euo pipefail
name=$1 python=$2 venv=$3 requirements=$4 coll=$5 only=${6:-}
if [ -z "$python" ]; then
  why="no suitable Python on this machine for the $name ansible-core (see the Makefile)"
  echo "$name ansible-core leg: skipped: $why"
  if [ "$only" != --venv-only ]; then  # tier.py's table says skipped, with the reason, never passed
    mkdir -p "${KHO_SKIP_DIR:-build/logs/skips}" && echo "$why" > "${KHO_SKIP_DIR:-build/logs/skips}/$name"
  fi
  exit 0
fi
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
stamp=$venv/.stamp
mkdir -p "$(dirname "$venv")"
exec 9>"${XDG_RUNTIME_DIR:-/tmp}/kexec-kho-venv-$(printf %s "$venv" | md5sum | cut -c1-12).lock"
flock 9  # the leg and the lab's lean tier may both ask for this venv at once: one builds it
if [ ! -f "$stamp" ] || [ "$top/$requirements" -nt "$stamp" ] || [ "$top/requirements.txt" -nt "$stamp" ]; then
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$top/$requirements"
  touch "$stamp"
fi
flock -u 9
[ "$only" = --venv-only ] && exit 0
export PATH=$venv/bin:$PATH
"$top/tests/utils/layout.sh" "$coll"
"$top/tests/utils/get-pip-standin.sh"
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
cd "$coll"
ansible-test sanity --venv --color no --python "$version"
python -m pytest -q -p no:cacheprovider -m "not lab" tests/unit
