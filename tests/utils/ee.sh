#!/usr/bin/env bash
# ansible-builder renders an execution environment build context with this collection and the
# Python needs its meta/execution-environment.yml declares. Building the image itself needs a
# container engine, which these machines lack: only the context is made and checked.
set -euo pipefail
coll=${1:?usage: ee.sh COLLECTION_DIR}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ansible-galaxy collection build --output-path "$work" "$coll" >/dev/null
tarball=$(basename "$work"/kexec-kho-*.tar.gz)
cat > "$work/requirements.yml" <<YAML
collections:
  - name: $tarball
    type: file
YAML
cat > "$work/execution-environment.yml" <<YAML
version: 3
images:
  base_image:
    name: quay.io/fedora/fedora:41
dependencies:
  ansible_core:
    package_pip: ansible-core==2.19.14
  ansible_runner:
    package_pip: ansible-runner
  galaxy: requirements.yml
additional_build_files:
  - src: $tarball
    dest: collections
YAML
cd "$work"
ansible-builder create --file execution-environment.yml --context context --output-filename Containerfile >/dev/null
test -s context/Containerfile
grep -q "kexec-kho" context/_build/requirements.yml
ansible-galaxy collection install -p "$work/installed" "$work/$tarball" >/dev/null 2>&1
ansible-builder introspect --sanitize "$work/installed" > introspect.txt
grep -q "pyfdt" introspect.txt && grep -q "jmespath" introspect.txt
echo "ansible-builder: introspection finds pyfdt and jmespath from meta/execution-environment.yml"
echo "ansible-builder: build context rendered (Containerfile, $(wc -l < context/Containerfile) lines)"
