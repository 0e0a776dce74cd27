#!/usr/bin/env bash
# Builds the local cluster's components from the Go modules under test/tools/<component>,
# once per content of that module: the binaries are kept in a per-user cache keyed by a hash
# of the module's files, so every clone of the repository (and CI) reuses them, and copied
# into bin/. A change of version in a go.mod changes the key and rebuilds.
#
# usage: hack/build-component.sh <component> <bin-dir> [ldflags]
set -euo pipefail
component=$1
bindir=$2
ldflags=${3:-}
root=$(cd "$(dirname "$0")/.." && pwd)
moddir="$root/test/tools/$component"
[ -f "$moddir/go.mod" ] || { echo "no module at $moddir" >&2; exit 1; }

# The module proxy is the only registry here: never fall back to fetching from VCS.
GOPROXY=$(go env GOPROXY | sed -e 's/,direct$//' -e 's/|direct$//')
export GOPROXY GOFLAGS="${GOFLAGS:-} -buildvcs=false" CGO_ENABLED=0

# Build tags a component needs (OLM's: containers_image_openpgp, to build without cgo) are in
# <module dir>/tags, one line.
tags=""
[ -f "$moddir/tags" ] && tags=$(tr -d '\n' < "$moddir/tags")
key=$( (cd "$moddir" && cat go.mod go.sum $(ls *.go 2>/dev/null); echo "$ldflags"; go env GOVERSION GOOS GOARCH
  if [ -n "$tags" ]; then echo "tags $tags"; fi) | sha256sum | cut -c1-16)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/meshwright/$component-$key"
if [ ! -f "$cache/.done" ]; then
  echo ">> building $component (cached afterwards in $cache)" >&2
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
  start=$(date +%s)
  # No -trimpath, and the same CGO_ENABLED and GOFLAGS as the operator's own builds: a package
  # compiled here at the same version as in the operator's or the test module's graph (the
  # Kubernetes tool module is kept on their versions of what they share) is compiled once.
  if [ -n "$(cd "$moddir" && ls *.go 2>/dev/null)" ]; then
    (cd "$moddir" && go build -tags "$tags" -ldflags "$ldflags" -o "$cache.tmp/" .)
  else
    # Modules that only build upstream mains list them in a go.mod tool block.
    (cd "$moddir" && go build -tags "$tags" -ldflags "$ldflags" -o "$cache.tmp/" tool)
  fi
  touch "$cache.tmp/.done"
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
  echo ">> built $component in $(( $(date +%s) - start ))s" >&2
fi
# Data files a component needs at run time (CRDs) are copied from the module it was built from,
# listed in <module dir>/assets as "<module path> <dir in that module> <name under bin/>".
if [ -f "$moddir/assets" ]; then
  while read -r mod sub dest; do
    [ -n "$mod" ] && [ "${mod#\#}" = "$mod" ] || continue
    if [ ! -d "$cache/$dest" ]; then
      src=$(cd "$moddir" && go list -m -f '{{.Dir}}' "$mod")/$sub
      rm -rf "$cache/$dest.tmp"
      cp -r "$src" "$cache/$dest.tmp"
      chmod -R u+w "$cache/$dest.tmp"
      mv "$cache/$dest.tmp" "$cache/$dest"
    fi
  done < "$moddir/assets"
fi
mkdir -p "$bindir"
for f in "$cache"/*; do
  name=$(basename "$f")
  if [ -d "$f" ]; then
    rm -rf "$bindir/$name" && cp -r "$f" "$bindir/$name"
  elif ! cmp -s "$f" "$bindir/$name"; then
    # Copy then rename: a binary of a running cluster cannot be overwritten in place.
    cp "$f" "$bindir/.$name.tmp" && mv -f "$bindir/.$name.tmp" "$bindir/$name"
  fi
done
