#!/usr/bin/env bash
# A Colab-like check: a fresh virtual environment with only what Colab has preinstalled that matters here
# (PyTorch; plus ipykernel and nbclient to run a notebook), then every chapter executed from its notebook alone,
# in order, from a folder outside the checkout. The first chapter's first cell (tools/install_cell.py) must install
# everything else from PyPI; the later chapters find hmmlib installed. HMMBOOK_INSTALL_SOURCE makes that cell
# install hmmlib from this working tree instead of the git URL (which is refused while it is the placeholder), so
# the check tests the checkout. CI runs the offline variant, tools/check_wheel.sh (make check-wheel).
#
# Usage: tools/check_colab.sh [book/NN_*.ipynb ...]     (PYTHON=python3.11, TORCH_SPEC=torch to choose)
# Needs PyPI (several hundred MB: torch). Not part of CI; run it before a release.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
if [ $# -gt 0 ]; then chapters=("$@"); else chapters=(book/[0-9][0-9]_*.ipynb); fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python3.11}" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet ipykernel nbclient "${TORCH_SPEC:-torch}"
cp "${chapters[@]}" "$work/"
cd "$work"
! env -u PYTHONPATH "$work/venv/bin/python" -c "import hmmlib" 2>/dev/null || { echo "hmmlib is importable before the cell ran" >&2; exit 1; }
for nb in "${chapters[@]}"; do
env -u PYTHONPATH HMMBOOK_INSTALL_SOURCE="$repo" HMMBOOK_PRESET="${HMMBOOK_PRESET:-default}" \
    "$work/venv/bin/python" - "$work/$(basename "$nb")" <<'PY'
import sys, time
import nbformat
from nbclient import NotebookClient
path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
t = time.time()
NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(sys.argv[1]).rsplit("/", 1)[0]}}).execute()
print(f"check_colab: OK, {path.rsplit('/', 1)[-1]} ran from the notebook alone in {time.time() - t:.0f} s")
PY
done
