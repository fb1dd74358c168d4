#!/usr/bin/env bash
# galaxy-importer on the built tarball, as Galaxy would import it (ansible-test is left to
# make sanity: the importer would run it in a container, which these machines lack).
set -euo pipefail
coll=${1:?usage: galaxy-importer.sh COLLECTION_DIR}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ansible-galaxy collection build --output-path "$work" "$coll" >/dev/null
printf '[galaxy-importer]\nRUN_ANSIBLE_TEST = False\nRUN_ANSIBLE_LINT = True\n' > "$work/galaxy-importer.cfg"
cd "$work"
GALAXY_IMPORTER_CONFIG="$work/galaxy-importer.cfg" python -m galaxy_importer.main kexec-kho-*.tar.gz > importer.log 2>&1 \
  || { cat importer.log; exit 1; }
if grep -E "^(ERROR|WARNING)" importer.log; then exit 1; fi
tail -n 1 importer.log
