#!/usr/bin/env bash
# Installs what the build and the tests need, when missing: Go modules, and
# (later) Debian packages. Idempotent; safe to run on every make.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v go >/dev/null || { echo "deps: Go is required (https://go.dev/dl), see README" >&2; exit 1; }
go mod download

# Debian packages the tests and the demo use, installed only when missing.
need=()
for spec in "$@"; do
	cmd=${spec%%:*}; pkg=${spec#*:}
	command -v "$cmd" >/dev/null || need+=("$pkg")
done
if ((${#need[@]})); then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing ${need[*]}; run as root or install them" >&2; exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
