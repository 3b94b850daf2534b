#!/usr/bin/env bash
# Set up (tools/setup.sh) and run the whole test suite: lint, types, the C core
# under the tests, integration tests with real packets (root), the man page; then
# the C core again, built with ASan and UBSan in .venv-asan (tools/sanitize.sh).
# Under CI=true a test that needs root and cannot have it fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
echo "== ruff"
.venv/bin/ruff check nmbridge tests benchmarks
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest tests "$@"
echo "== the C core under AddressSanitizer and UBSan (tests/ffi)"
bash tools/sanitize.sh
