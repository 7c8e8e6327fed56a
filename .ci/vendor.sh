#!/usr/bin/env bash
# Re-fetch the vendored front-end libraries from the npm registry.
# Usage: make vendor  (edit the versions below to upgrade)
set -euo pipefail
cd "$(dirname "$0")/.."
MARKED=18.2.1
DOMPURIFY=3.4.18
DIFF=9.0.0
dest=static/js/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fetch() {  # package version file-in-package output-name
  (cd "$tmp" && npm pack --silent "$1@$2" >/dev/null && mkdir -p "$1" && tar -xzf "$1-$2.tgz" -C "$1")
  cp "$tmp/$1/package/$3" "$dest/$4"
  cp "$tmp/$1/package/LICENSE" "$dest/$1-$2.LICENSE"
}
esm_from_umd() {  # file: a UMD bundle made an ES module: run as CommonJS, export its names
  local names
  names=$(sed -n 's/^ *exports\.\([A-Za-z_$][A-Za-z0-9_$]*\) = .*/\1/p' "$1" | paste -sd, - | sed 's/,/, /g')
  {
    echo "// ES module wrapper added by .ci/vendor.sh around the package's UMD build."
    echo "const module = { exports: {} };"
    echo "const exports = module.exports;"
    cat "$1"
    echo "export const { $names } = module.exports;"
    echo "export default module.exports;"
  } >"$1.tmp"
  mv "$1.tmp" "$1"
}
fetch marked "$MARKED" lib/marked.esm.js "marked-$MARKED.esm.js"
fetch dompurify "$DOMPURIFY" dist/purify.es.mjs "purify-$DOMPURIFY.esm.js"
# jsdiff ships its ES modules as many files (libesm/); its one-file build is UMD.
fetch diff "$DIFF" dist/diff.js "diff-$DIFF.esm.js"
esm_from_umd "$dest/diff-$DIFF.esm.js"
sed -i "/sourceMappingURL/d" "$dest"/*.js
ls -l "$dest"
