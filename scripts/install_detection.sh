#!/usr/bin/env bash
# The detection extra: mmcv 2.1.0 with its compiled ops, mmengine, mmdet 3.3.0, lvis and the
# evaluators, into the environment of $PY (default: .venv/bin/python).  `make det` runs this.
#
# PyPI has only mmcv's source, and mmdet 3.3.0 needs mmcv >=2.0,<2.2 with compiled ops
# (mmcv-lite lacks mmcv._ext).  mmcv 2.1.0's setup.py needs two fixes to build against a
# current torch: a setuptools older than 80 (it imports pkg_resources) and -std=c++20 instead of
# the -std=c++17 it forces (ATen now requires C++20).  The built wheel is cached, keyed by
# mmcv, torch and Python versions and CPU/CUDA, so a second install takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"   # absolute, the venv's own (no symlink resolving)
MMCV_VERSION=2.1.0
CACHE=${LT_BENCH_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lt_bench/wheels}
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }

# mmcv compiles its CUDA ops when a GPU is visible or FORCE_CUDA=1 (its setup.py's rule)
variant=$("$PY" - <<'PY'
import os, sys, torch
cuda = torch.cuda.is_available() or os.environ.get("FORCE_CUDA") == "1"
print(f"torch{torch.__version__.split('+')[0]}-py{sys.version_info.major}{sys.version_info.minor}-{'cuda' if cuda else 'cpu'}")
PY
)
wheel_dir="$CACHE/mmcv-$MMCV_VERSION-$variant"
start=$(date +%s)

pip install --quiet "setuptools<80" wheel ninja   # mmcv's setup.py imports pkg_resources
if ! ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl >/dev/null 2>&1; then
    echo "building mmcv $MMCV_VERSION ($variant) from source; cached in $wheel_dir afterwards"
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    pip download --quiet --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$build"
    tar -xzf "$build/mmcv-$MMCV_VERSION.tar.gz" -C "$build"
    src="$build/mmcv-$MMCV_VERSION"
    sed -i "s/'-std=c++17'/'-std=c++20'/g" "$src/setup.py"
    grep -q -- "-std=c++20" "$src/setup.py" || { echo "could not patch $src/setup.py" >&2; exit 1; }
    mkdir -p "$wheel_dir"
    (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel --no-build-isolation --no-deps \
        --disable-pip-version-check -w "$wheel_dir.partial" .)
    mv "$wheel_dir.partial"/mmcv-*.whl "$wheel_dir"/ && rmdir "$wheel_dir.partial"
fi
pip install --quiet "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl
pip install --quiet -e ".[det]"
"$PY" -c "import mmcv, mmdet, lvis, faster_coco_eval; from mmcv.ops import nms, RoIAlign; print('mmcv', mmcv.__version__, 'mmdet', mmdet.__version__)"
echo "detection extra installed in $(( $(date +%s) - start )) s"
