#!/bin/sh
# The EC2 calls of one bake: wsgi-ami against amazon-ebs (packer-plugin-amazon,
# v1.8.2 unless AMAZON_PLUGIN_VERSION says otherwise), side by side against one
# moto through the counting proxy of the builder's e2e tests, without and with
# one region copy. Prints a Markdown table of calls per API (docs/BENCHMARKS.md).
#
#   make bench-ami-calls        (or: sh bench/amicalls/run.sh)
#
# packer-plugin-amazon is built for this measurement only, from the Go module
# cache (or the module proxy), in a temporary directory that is removed at
# the end: it is never part of this repository nor of its go.mod.
# Needs python3 with moto, and packer v1.12.0 (bin/packer, $PACKER or built
# from the module cache by the test).
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
version=${AMAZON_PLUGIN_VERSION:-v1.8.2}
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM

src=$(cd / && GOFLAGS= go mod download -json "github.com/hashicorp/packer-plugin-amazon@$version" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
test -n "$src" || { echo "could not download github.com/hashicorp/packer-plugin-amazon@$version" >&2; exit 1; }
cp -r "$src/." "$tmp/src"
chmod -R u+w "$tmp/src"
echo "building packer-plugin-amazon $version in $tmp" >&2
(cd "$tmp/src" && GOWORK=off GOFLAGS=-mod=mod go build -o "$tmp/packer-plugin-amazon" .)

out=${WSGI_BENCH_OUT:-$tmp/calls.md}
cd "$repo"
WSGI_BENCH_AMAZON_PLUGIN="$tmp/packer-plugin-amazon" WSGI_BENCH_OUT="$out" \
	go test -tags e2e -count=1 -v -timeout 30m -run '^TestCallsAgainstAmazonEBS$' ./builder/ >&2
echo "Run of $(date -u +%Y-%m-%d) (packer-plugin-amazon $version, moto $(python3 -c 'import moto; print(moto.__version__)')):"
cat "$out"
