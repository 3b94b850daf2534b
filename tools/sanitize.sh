#!/usr/bin/env bash
# The C core under AddressSanitizer and UBSan: build nmbridge with
# NMBRIDGE_SANITIZE=1 into a virtualenv of its own (.venv-asan; the main .venv
# and the in-tree build are not touched) and run the tests that drive the core
# through cffi (tests/ffi: the engine, its properties, regions, the ABI).
#
# The interpreter is not instrumented, so libasan is preloaded. Python's own
# allocations are never freed at exit: leak detection is off. Any ASan report
# aborts the run; UBSan reports go to files, and any file fails the run.
#
#   tools/sanitize.sh              (tools/test.sh runs it after the main suite)
#   tools/sanitize.sh -k chain     (arguments go to pytest)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv=$root/.venv-asan
PY=${PYTHON:-python3}

asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
for lib in "$asan" "$ubsan"; do
    if [ ! -e "$lib" ]; then
        echo "sanitize: $lib is missing: install gcc's sanitizer runtimes (Debian: libasan8 libubsan1)" >&2
        exit 1
    fi
done

if [ ! -x "$venv/bin/python" ]; then
    "$PY" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
"${pip[@]}" install "setuptools>=77" wheel "cffi>=1.15" "pytest>=7" "hypothesis>=6"

work=$(mktemp -d "${TMPDIR:-/tmp}/nmbridge-sanitize.XXXXXX")
trap 'rm -rf "$work"' EXIT
# built from a copy: an in-tree build would leave ASan objects in build/ for the next
# ordinary build to reuse (and setuptools would reuse the ordinary ones here)
mkdir "$work/src"
tar -C "$root" --exclude=__pycache__ --exclude='*.so' --exclude='_core.c' -cf - \
    pyproject.toml setup.py README.md nmbridge man systemd | tar -C "$work/src" -xf -
# a regular (not editable) install: the sanitized core lives in .venv-asan only
NMBRIDGE_SANITIZE=1 "${pip[@]}" install --no-build-isolation --no-deps --force-reinstall \
    "$work/src"
export LD_PRELOAD="$asan"
# both runtimes report on stderr (log_path is not honoured with libubsan loaded beside
# the preloaded libasan): the output is kept and searched for reports
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1"
reports='runtime error:|ERROR: AddressSanitizer|SUMMARY: UndefinedBehaviorSanitizer'

# run from elsewhere: the working tree's nmbridge (and its unsanitized core) must not
# shadow the installed one
cd "$work"
core=$("$venv/bin/python" -c 'import nmbridge._ffi._core as c; print(c.__file__)')
case "$core" in
    "$venv"/*) ;;
    *) echo "sanitize: imported $core, not the core built in $venv" >&2; exit 1 ;;
esac
# ldd's output is taken whole first: `ldd | grep -q` under pipefail fails on a good
# build whenever grep exits at its match before ldd has written the rest (SIGPIPE)
libs=$(ldd "$core")
if [[ "$libs" != *libasan* ]]; then
    echo "sanitize: $core is not built with AddressSanitizer (NMBRIDGE_SANITIZE=1 ignored?)" >&2
    exit 1
fi

# the canary: the same set-up must catch a planted heap overflow and a signed
# overflow, or a clean run below would prove nothing
cat > "$work/canary.c" <<'C'
#include <limits.h>
#include <stdlib.h>
int heap_overflow(int i) { volatile char *p = malloc(8); int v = p[i]; free((void *)p); return v; }
int int_overflow(int a) { return a + INT_MAX; }
C
gcc -shared -fPIC -fsanitize=address,undefined -fno-omit-frame-pointer -g -O1 \
    -o "$work/canary.so" "$work/canary.c"
call() { "$venv/bin/python" -c "import ctypes, sys; getattr(ctypes.CDLL(sys.argv[1]), sys.argv[2])(int(sys.argv[3]))" "$work/canary.so" "$@"; }
if call int_overflow 1 2>"$work/canary-ub.log" && grep -q "signed integer overflow" "$work/canary-ub.log" &&
    ! call heap_overflow 8 2>"$work/canary-asan.log" &&
    grep -q "ERROR: AddressSanitizer: heap-buffer-overflow" "$work/canary-asan.log"; then
    rm -f "$work"/canary*
else
    echo "sanitize: the sanitizers did not catch the planted bugs: this set-up proves nothing" >&2
    cat "$work"/canary-*.log >&2 || true
    exit 1
fi

# -s: a report printed by a test that passes must not be swallowed by pytest's capture
set +e
"$venv/bin/python" -m pytest -q -s -p no:cacheprovider --rootdir "$root" -c "$root/pyproject.toml" \
    "$root/tests/ffi" "$@" 2>&1 | tee "$work/pytest.log"
status=${PIPESTATUS[0]}
set -e
if grep -E -q "$reports" "$work/pytest.log"; then
    echo "sanitize: sanitizer reports:" >&2
    grep -E -A12 "$reports" "$work/pytest.log" >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "sanitize: FAILED (the C core under ASan/UBSan)" >&2
    exit "$status"
fi
echo "sanitize: the C core passed tests/ffi under ASan and UBSan"
