#!/usr/bin/env bash
# Copy the collection's files (tracked, or new and not ignored) to DEST, laid out as
# ansible_collections/kexec/kho, which ansible-test and the collection loader expect.
set -euo pipefail
dest=${1:?usage: layout.sh DEST}
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
mkdir -p "$dest"
cd "$top"
git ls-files -z --cached --others --exclude-standard \
  | rsync -a --delete --delete-excluded --from0 --files-from=- --exclude='tests/output/' ./ "$dest/"
# ansible-test needs a git repository to tell its files; give it one of its own.
if [ ! -d "$dest/.git" ]; then git -C "$dest" init -q; fi
git -C "$dest" add -A >/dev/null 2>&1
