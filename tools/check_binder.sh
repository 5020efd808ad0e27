#!/usr/bin/env bash
# Check that binder/requirements.txt resolves for the Python of binder/runtime.txt on Linux x86_64, which is
# what repo2docker builds on mybinder.org. A dry run: nothing is installed, only package metadata is read.
#
# The local pip configuration (find-links, private indexes, constraint files) is ignored so that the check
# sees exactly the public indexes Binder sees.
#
# torch comes from the PyTorch CPU index (https://download.pytorch.org/whl/cpu). When that index is not
# reachable from this machine (some CI sandboxes reach only PyPI), the check falls back to resolving the same
# pins with torch==<version without +cpu> from PyPI, and says so: the CPU and CUDA wheels of one torch
# release have the same Python-package dependencies, so the fallback still catches a missing wheel for the
# Python version and any conflict between the pins; it cannot catch a CPU wheel withdrawn from the CPU index.
#
# Usage: tools/check_binder.sh            (PYTHON=... picks the interpreter whose pip runs the check)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
test -x "$PY" || PY=python3
REQ=binder/requirements.txt
pyver=$(sed -n 's/^python-\([0-9.]*\).*/\1/p' binder/runtime.txt)
if [ -z "$pyver" ]; then echo "check_binder: binder/runtime.txt must say e.g. python-3.11" >&2; exit 1; fi
abi="cp${pyver/./}"

# repo2docker's image has a recent glibc: accept every manylinux tag up to glibc 2.35 (pip does not
# expand an explicit --platform to older tags by itself).
plats=()
for m in $(seq 5 35); do plats+=(--platform "manylinux_2_${m}_x86_64"); done
plats+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)

resolve() {
    env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL -u PIP_CONSTRAINT -u PIP_NO_INDEX \
        PIP_CONFIG_FILE=/dev/null \
        "$PY" -m pip install --dry-run --quiet --ignore-installed --only-binary=:all: \
        --python-version "$pyver" --implementation cp --abi "$abi" --abi abi3 --abi none "${plats[@]}" \
        --index-url https://pypi.org/simple "$@"
}

cpu_index=$(sed -n 's/^--extra-index-url[ =]*//p' "$REQ" | head -1)
if "$PY" - "$cpu_index" <<'PYEOF'
import sys, urllib.request
url = sys.argv[1].rstrip("/") + "/torch/"
try:
    urllib.request.urlopen(url, timeout=15).close()
except Exception as e:
    print(f"check_binder: {url} is not reachable ({e.__class__.__name__})", file=sys.stderr)
    sys.exit(1)
PYEOF
then
    echo "check_binder: resolving $REQ for Python $pyver (PyPI + $cpu_index)"
    resolve -r "$REQ"
    echo "check_binder: OK, $REQ resolves for Python $pyver on Linux x86_64"
else
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    sed -e '/^--extra-index-url/d' -e 's/^\(torch==[^+ ]*\)+cpu/\1/' "$REQ" > "$tmp"
    echo "check_binder: FALLBACK: the PyTorch CPU index is unreachable; resolving $REQ against PyPI only," \
         "with $(grep '^torch==' "$tmp") (the CUDA build of the same release) for Python $pyver"
    resolve -r "$tmp"
    echo "check_binder: OK (fallback), $REQ resolves for Python $pyver on Linux x86_64; torch's CPU wheel not checked"
fi
