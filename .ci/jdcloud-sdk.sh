#!/usr/bin/env bash
# Installs the target cloud's official JavaScript SDK (jdcloud-sdk-js, a
# pinned version) with npm into a cache folder, for the tests that prove
# our JDCLOUD2-HMAC-SHA256 signer against the SDK's, and prints the
# environment that points the tests at it:
#
#   eval "$(.ci/jdcloud-sdk.sh)"     # install if missing, export JDCLOUD_SDK_JS
#
# The cache is $JDCLOUD_SDK_CACHE (default ~/.cache/vmimport/jdcloud-sdk-js-VERSION;
# about 35 MB, 20 s cold). npm runs with --ignore-scripts: nothing of the
# package runs at install time. Messages go to stderr; only the export
# line goes to stdout.
set -euo pipefail

version=1.2.202
cache=${JDCLOUD_SDK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmimport/jdcloud-sdk-js-$version}
pkg=$cache/node_modules/jdcloud-sdk-js

if [ ! -f "$pkg/src/lib/signers/v2.js" ]; then
	for tool in node npm; do
		if ! command -v "$tool" >/dev/null; then
			echo "jdcloud-sdk.sh: $tool is not installed" >&2
			exit 1
		fi
	done
	echo "jdcloud-sdk.sh: installing jdcloud-sdk-js@$version into $cache" >&2
	mkdir -p "$cache"
	npm install --prefix "$cache" --no-audit --no-fund --ignore-scripts --loglevel=error "jdcloud-sdk-js@$version" >&2
fi
got=$(node -p "require('$pkg/package.json').version")
if [ "$got" != "$version" ]; then
	echo "jdcloud-sdk.sh: $pkg holds version $got, not $version" >&2
	exit 1
fi
echo "export JDCLOUD_SDK_JS=$pkg"
