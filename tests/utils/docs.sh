#!/usr/bin/env bash
# Docs checks: antsibull-docs lint, the changelog lint, and a docs site built into $1/docs
# (not committed). Offline machines cannot fetch intersphinx inventories, so the Sphinx build
# runs without -W; every plugin page must exist in the result.
set -euo pipefail
coll=${1:?usage: docs.sh COLLECTION_DIR}
out=$(dirname "$(dirname "$(dirname "$coll")")")/docs
cd "$coll"
antsibull-docs lint-collection-docs --plugin-docs .
antsibull-changelog lint
rm -rf "$out" && mkdir -m 0700 -p "$out"
antsibull-docs sphinx-init --use-current --dest-dir "$out" kexec.kho >/dev/null
cd "$out"
mkdir -p rst && chmod og-w rst
antsibull-docs --config-file antsibull-docs.cfg collection --cleanup everything --use-current --dest-dir rst kexec.kho
sphinx-build -M html rst build -c . -q 2>/dev/null
missing=0
pages=$(cd "$coll/plugins" && for f in modules/*.py filter/*.yml callback/*.py; do
  kind=${f%%/*}; name=$(basename "${f%.*}"); echo "${name}_${kind%s}"; done)
for page in $pages; do
  if [ ! -s "build/html/collections/kexec/kho/$page.html" ]; then echo "docs: $page.html missing"; missing=1; fi
done
[ "$missing" = 0 ] && echo "docs: site built in $out/build/html"
exit "$missing"
