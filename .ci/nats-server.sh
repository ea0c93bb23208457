#!/usr/bin/env bash
# Installs nats-server v2.15.2 (with go install, into a cache folder) for the
# queue tests, and prints the environment that points them at it:
#
#   eval "$(.ci/nats-server.sh)"
#
# The tests start their own servers on loopback (JetStream in a temporary
# folder); without this they build the same binary into the same folder.
# Cache: $NATS_SERVER_CACHE (default ~/.cache/vmimport/nats-server-v2.15.2).
# Messages go to stderr; only `export` lines go to stdout.
set -euo pipefail

version=v2.15.2
cache=${NATS_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmimport/nats-server-$version}
bin=$cache/nats-server

if [ ! -x "$bin" ]; then
	echo "nats-server.sh: installing nats-server $version into $cache" >&2
	mkdir -p "$cache"
	GOBIN=$cache GOFLAGS=-mod=mod go install "github.com/nats-io/nats-server/v2@$version" >&2
fi
echo "nats-server.sh: $("$bin" --version)" >&2
echo "export NATS_SERVER_BIN=$bin"
