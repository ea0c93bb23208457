#!/usr/bin/env bash
# Starts a local S3 server (versitygw v1.8.0, posix backend) on a free
# loopback port for the upload tests and the demo, and prints the
# environment to use it:
#
#   eval "$(.ci/versitygw.sh)"        # install if missing, start, export env
#   .ci/versitygw.sh stop             # stop the one started (uses $VERSITYGW_PID)
#
# The binary is installed with `go install` into $VERSITYGW_CACHE
# (default: ~/.cache/vmimport/versitygw-v1.8.0; about 100 s cold).
# The data folder is $VERSITYGW_DIR (default: a new temporary folder).
# Messages go to stderr; only `export` lines go to stdout.
set -euo pipefail

version=v1.8.0
cache=${VERSITYGW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmimport/versitygw-$version}
bin=$cache/versitygw

if [ "${1:-}" = stop ]; then
	if [ -n "${VERSITYGW_PID:-}" ]; then
		kill "$VERSITYGW_PID" 2>/dev/null || true
	fi
	# A data folder this script made is removed: uploads of large disks
	# would otherwise stay on the machine.
	if [ "${VERSITYGW_TEMP:-}" = 1 ] && [ -n "${VERSITYGW_DIR:-}" ]; then
		sleep 0.2
		rm -rf "$VERSITYGW_DIR" "$VERSITYGW_DIR.log"
	fi
	exit 0
fi

if [ ! -x "$bin" ]; then
	echo "versitygw.sh: installing versitygw $version into $cache" >&2
	mkdir -p "$cache"
	GOBIN=$cache GOFLAGS=-mod=mod go install "github.com/versity/versitygw/cmd/versitygw@$version" >&2
fi

temp=0
if [ -z "${VERSITYGW_DIR:-}" ]; then temp=1; fi
data=${VERSITYGW_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/versitygw.XXXXXX")}
mkdir -p "$data"
access=test$RANDOM$RANDOM
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for attempt in 1 2 3 4 5 6 7 8; do
	port=$((20000 + RANDOM % 40000))
	port_free "$port" || continue
	ROOT_ACCESS_KEY=$access ROOT_SECRET_KEY=$secret \
		nohup "$bin" --port "127.0.0.1:$port" --health /healthz posix "$data" >"$data.log" 2>&1 </dev/null &
	pid=$!
	for _ in $(seq 1 100); do
		if ! kill -0 "$pid" 2>/dev/null; then
			break
		fi
		if (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && head -1 <&3 | grep -q ' 200') 2>/dev/null; then
			echo "versitygw.sh: versitygw $version listening on 127.0.0.1:$port (pid $pid, data $data, log $data.log)" >&2
			cat <<ENV
export CONVERT_TEST_S3_ENDPOINT=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=$access
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=us-east-1
export VERSITYGW_PID=$pid
export VERSITYGW_DIR=$data
export VERSITYGW_TEMP=$temp
ENV
			exit 0
		fi
		sleep 0.1
	done
	kill "$pid" 2>/dev/null || true
	echo "versitygw.sh: attempt $attempt on port $port failed: $(tail -3 "$data.log" 2>/dev/null)" >&2
done
echo "versitygw.sh: could not start versitygw" >&2
exit 1
