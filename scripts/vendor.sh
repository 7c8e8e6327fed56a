#!/usr/bin/env bash
# Re-fetch the vendored front-end libraries from the npm registry.
# Usage: scripts/vendor.sh  (edit the versions below to upgrade)
set -euo pipefail
cd "$(dirname "$0")/.."
MARKED=18.2.1
DOMPURIFY=3.4.18
dest=static/js/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fetch() {  # package version file-in-package output-name
  (cd "$tmp" && npm pack --silent "$1@$2" >/dev/null && mkdir -p "$1" && tar -xzf "$1-$2.tgz" -C "$1")
  cp "$tmp/$1/package/$3" "$dest/$4"
  cp "$tmp/$1/package/LICENSE" "$dest/$1-$2.LICENSE"
}
fetch marked "$MARKED" lib/marked.esm.js "marked-$MARKED.esm.js"
fetch dompurify "$DOMPURIFY" dist/purify.es.mjs "purify-$DOMPURIFY.esm.js"
sed -i "/sourceMappingURL/d" "$dest"/*.js
ls -l "$dest"
