#!/usr/bin/env bash
# The console's front-end libraries (htmx, Chart.js), fetched from the npm registry by name and exact
# version, checked against the integrity hash npm publishes, and copied into the package
# (src/multihome/api/console/static/vendor/). The copies are committed, so `make demo` and a pip install
# need nothing but Python; `make vendor` re-fetches them (it needs npm) after a version change here.
# Nothing is loaded from a CDN at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/multihome/api/console/static/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# package@version  file inside the package  name in the console
PACKAGES=(
  "htmx.org@2.0.8 package/dist/htmx.min.js htmx.min.js"
  "chart.js@4.5.1 package/dist/chart.umd.min.js chart.umd.min.js"
)
mkdir -p "$out"
: > "$tmp/VERSIONS"
for entry in "${PACKAGES[@]}"; do
  read -r spec inner name <<<"$entry"
  (cd "$tmp" && npm pack --silent --json "$spec" > pack.json)
  tarball=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["filename"])' "$tmp/pack.json")
  integrity=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["integrity"])' "$tmp/pack.json")
  published=$(npm view "$spec" dist.integrity)
  if [ "$integrity" != "$published" ]; then
    echo "vendor-frontend: $spec: tarball integrity $integrity differs from the registry's $published" >&2
    exit 1
  fi
  tar -xzf "$tmp/$tarball" -C "$tmp" "$inner"
  cp "$tmp/$inner" "$out/$name"
  rm -rf "$tmp/package"
  echo "$name $spec $integrity" >> "$tmp/VERSIONS"
done
cp "$tmp/VERSIONS" "$out/VERSIONS"
echo "vendored into $out:"
cat "$out/VERSIONS"
