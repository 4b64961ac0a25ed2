#!/usr/bin/env bash
# make demo: build, create the lab, run xdproxy with real traffic, summarise, clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./internal/demo --bin bin/xdproxy --config configs/lab.yaml "$@"
