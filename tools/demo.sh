#!/usr/bin/env bash
# Set up (tools/setup.sh) and run the demo: a bridge between a veth and a TAP in
# network namespaces, real traffic through it, live counters. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/nmbridge demo "$@"
