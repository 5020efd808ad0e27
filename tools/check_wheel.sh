#!/usr/bin/env bash
# CI: every chapter runs from the built wheel, as on Colab. A wheel of the working tree is built and installed into a
# fresh virtual environment outside the checkout by chapter 1's own install cell (HMMBOOK_INSTALL_SOURCE points it at
# the wheel); then every chapter (book/NN_*.ipynb, copied out of the checkout) is executed there at the ci preset,
# from a folder outside the repository, with an empty model cache. A chapter that reads records the wheel lacks, or
# finds hmmlib anywhere but in that environment, fails.
#
# Offline and fast: the fresh environment reaches the packages of the project's environment (torch, jupyter, ...)
# through a folder of links to them (hmmlib's own editable install left out), and pip runs with --no-index.
#
# Usage: tools/check_wheel.sh [book/03_head_tuning.ipynb ...]     (PYTHON=.venv/bin/python by default)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
py=${PYTHON:-$repo/.venv/bin/python}
start=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ $# -gt 0 ]; then chapters=("$@"); else chapters=(book/[0-9][0-9]_*.ipynb); fi

# 1. The wheel, built from a copy of the files git tracks (or would), so the checkout gets no build/ folder.
mkdir -p "$work/src" "$work/dist" "$work/nb" "$work/shared-site"
git ls-files -co --exclude-standard -z | tar --null -cf - -T - | tar -xf - -C "$work/src"
"$py" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$work/dist" "$work/src" 2>"$work/build.log" \
    || { cat "$work/build.log" >&2; exit 1; }
wheel=$(ls "$work"/dist/hmmlib-*.whl)
"$py" -m zipfile -l "$wheel" > "$work/wheel.txt"
grep -q "hmmlib/_results/ci/fig-b1.jsonl" "$work/wheel.txt" \
    || { echo "check_wheel: $wheel has no hmmlib/_results/ci/*.jsonl (see pyproject.toml)" >&2; exit 1; }

# 2. A fresh environment without pip or hmmlib; the project's packages reached through links (never hmmlib's).
"$py" -m venv --without-pip "$work/venv"
vpy=$work/venv/bin/python
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for entry in "$site"/*; do
    case $(basename "$entry") in hmmlib*|__editable__*|*.pth) ;; *) ln -s "$entry" "$work/shared-site/" ;; esac
done
echo "$work/shared-site" > "$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/hmmbook-shared.pth"
cd "$work/nb"
if env -u PYTHONPATH "$vpy" -c "import hmmlib" 2>/dev/null; then
    echo "check_wheel: hmmlib is importable before the install cell ran" >&2; exit 1
fi
env -u PYTHONPATH "$vpy" -m ipykernel install --prefix "$work/venv" --name python3 >/dev/null

# 3. Every chapter, from outside the checkout, in that environment (its kernel is the venv's python).
(cd "$repo" && cp "${chapters[@]}" "$work/nb/")
echo "== check_wheel: wheel and environment ready in $(( $(date +%s) - start )) s"
env -u PYTHONPATH -u HMMBOOK_RESULTS JUPYTER_PATH="$work/venv/share/jupyter" HMMBOOK_PRESET=ci \
    HMMBOOK_CACHE="$work/cache" HMMBOOK_INSTALL_SOURCE="$wheel" PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TQDM_DISABLE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MPLBACKEND=Agg \
    "$vpy" - "$work/venv" "$repo" "$(basename -a "${chapters[@]}")" <<'PY'
import sys, time
import nbformat
from nbclient import NotebookClient

venv, repo, names = sys.argv[1], sys.argv[2], sys.argv[3].split()
# After the install cell: hmmlib must come from the fresh environment, and its records from the wheel.
probe = ("import hmmlib, sys\n"
         "from hmmlib.experiments.pipeline import DEFAULT_RESULTS\n"
         f"assert hmmlib.__file__.startswith({venv!r}), hmmlib.__file__\n"
         f"assert not hmmlib.__file__.startswith({repo!r}) and not str(DEFAULT_RESULTS).startswith({repo!r})\n"
         "assert DEFAULT_RESULTS.name == '_results' and DEFAULT_RESULTS.is_dir(), DEFAULT_RESULTS\n")
total = time.time()
for name in names:
    nb = nbformat.read(name, as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(first + 1, nbformat.v4.new_code_cell(probe))
    t = time.time()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
    print(f"check_wheel: {name} ran from the installed wheel in {time.time() - t:.0f} s", flush=True)
print(f"check_wheel: {len(names)} chapter(s) in {time.time() - total:.0f} s", flush=True)
PY
echo "== check_wheel: done in $(( $(date +%s) - start )) s"
