#!/usr/bin/env bash
# Copy the collection's files (tracked, or new and not ignored) to DEST, laid out as
# ansible_collections/kexec/kho, which ansible-test and the collection loader expect.
set -euo pipefail
dest=${1:?usage: layout.sh DEST}
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
mkdir -p "$dest"
cd "$top"
# Start empty but for the git metadata, so a file deleted here is gone there too
# (tar and find only: this runs before the lab's host packages are installed).
find "$dest" -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$dest"
# ansible-test needs a git repository to tell its files; give it one of its own.
if [ ! -d "$dest/.git" ]; then git -C "$dest" init -q; fi
git -C "$dest" add -A >/dev/null 2>&1
# The release tags and the version each one's galaxy.yml names (tests/unit/test_release.py): the layout's own
# repository has no history; a source without one (a tarball) writes none, and that test says skipped.
mkdir -p "$dest/tests/output"
for tag in $(git tag -l); do
  printf '%s %s\n' "$tag" "$(git show "$tag:galaxy.yml" 2>/dev/null | sed -n 's/^version: *//p')"
done > "$dest/tests/output/release-tags.txt"
