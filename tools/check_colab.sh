#!/usr/bin/env bash
# A Colab-like check: a fresh virtual environment with only what Colab has preinstalled that matters here
# (PyTorch; plus ipykernel and nbclient to run a notebook), then one chapter executed from the notebook alone.
# Its first cell (tools/install_cell.py) must install everything else. HMMBOOK_INSTALL_SOURCE makes that cell
# install hmmlib from this working tree instead of the git URL, so the check tests the checkout.
#
# Usage: tools/check_colab.sh [book/01_hmms.ipynb]     (PYTHON=python3.11, TORCH_SPEC=torch to choose)
# Needs PyPI (several hundred MB: torch). Not part of CI; run it before a release.
set -euo pipefail
cd "$(dirname "$0")/.."
nb=${1:-book/01_hmms.ipynb}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python3.11}" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet ipykernel nbclient "${TORCH_SPEC:-torch}"
! "$work/venv/bin/python" -c "import hmmlib" 2>/dev/null || { echo "hmmlib is importable before the cell ran" >&2; exit 1; }
cp "$nb" "$work/"
HMMBOOK_INSTALL_SOURCE="$PWD" HMMBOOK_PRESET="${HMMBOOK_PRESET:-default}" "$work/venv/bin/python" - "$work/$(basename "$nb")" <<'PY'
import sys, time
import nbformat
from nbclient import NotebookClient
path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
t = time.time()
NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(sys.argv[1]).rsplit("/", 1)[0]}}).execute()
print(f"check_colab: OK, {path.rsplit('/', 1)[-1]} ran from the notebook alone in {time.time() - t:.0f} s")
PY
