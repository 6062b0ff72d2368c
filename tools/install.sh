#!/usr/bin/env bash
# One-command install of the InternViT dense-prediction stack on a current torch.
#
#   tools/install.sh                 # uses/creates .venv at the repository root
#   VENV=$CONDA_PREFIX tools/install.sh
#
# Steps (every one is skipped when already satisfied, so a second run takes seconds):
#   1. the environment: VENV (default <repo>/.venv), created with `python3 -m venv` if missing;
#   2. torch: an installed torch is kept, otherwise requirements/torch.txt;
#   3. mmcv 2.1.0 with its compiled ops (mmcv._ext) built from the source archive against that
#      torch, with the known traps handled (pkg_resources -> setuptools<81, --no-build-isolation,
#      MMCV_WITH_OPS=1, the C++ standard the torch headers need instead of the hard-coded c++17).
#      The wheel is cached in MMCV_WHEELHOUSE (default ~/.cache/internvit-dense/mmcv-wheels) under
#      a key of mmcv/python/torch/CUDA/ABI, so a wheel built for another torch is never reused;
#   4. mmengine / mmseg / mmdet / timm / fvcore (requirements/runtime.txt), test tools,
#      DeepSpeed (requirements/distributed.txt, Python part only) and this repository in
#      editable mode;
#   5. a check that mmcv._ext loads and mmcv.ops.nms / MultiScaleDeformableAttention import.
#
# MMCV_REINSTALL=1 reinstalls mmcv even when a working one is there (from the wheel cache when
# it holds a wheel for this key, else by building); MAX_JOBS bounds the compile jobs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON_BOOTSTRAP="${PYTHON:-python3}"
WHEELHOUSE="${MMCV_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/internvit-dense/mmcv-wheels}"
REQ="$ROOT/requirements"
MMCV_VERSION="$(sed -n 's/^mmcv==\([0-9.]*\).*/\1/p' "$REQ/mmcv.txt")"

# Install requirement files with pip only when something in them is not satisfied yet
# (pip's resolver needs ~30 s even when nothing changes; this check takes well under one).
pip_install_reqs() {
  if "$PY" - "$@" <<'PYEOF' 2>/dev/null; then return 0; fi
import importlib.metadata as md, sys
from packaging.requirements import Requirement
for path in sys.argv[1:]:
    for line in open(path):
        line = line.split('#')[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        if not req.specifier.contains(md.version(req.name), prereleases=True):
            sys.exit(1)
PYEOF
  local args=()
  for f in "$@"; do args+=(-r "$f"); done
  "${PIP[@]}" install -q ${PIP_FLAGS:-} "${args[@]}"
}

log() { printf '[install %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[install] ERROR: %s\n' "$*" >&2; exit 1; }

start=$(date +%s)

# ---------------------------------------------------------------- 1. environment
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PYTHON_BOOTSTRAP" -m venv "$VENV" || die "could not create a venv at $VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
"$PY" -c 'import sys; assert sys.version_info >= (3, 9), sys.version' \
  || die "$PY is older than Python 3.9"

# ---------------------------------------------------------------- 2. torch
# One interpreter start both checks torch and computes the wheel-cache key: the key names
# everything the compiled extension depends on (Python, torch, CUDA, ops kind, C++ ABI).
torch_key() {
  "$PY" - <<'PYEOF'
import sys, torch
import torchvision  # noqa: F401  (timm and transformers need a matching torchvision)
ops = 'cuda' if (torch.cuda.is_available() and torch.version.cuda) else 'cpu'
print(f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.replace('+', '_')}"
      f"-cuda{torch.version.cuda or 'cpu'}-ops_{ops}"
      f"-cxx11abi{int(torch._C._GLIBCXX_USE_CXX11_ABI)}")
PYEOF
}
if KEY="$(torch_key 2>/dev/null)"; then
  log "keeping installed torch (${KEY#*-torch})"
elif "$PY" -c 'import torch' 2>/dev/null; then
  die "torch is installed in $VENV but torchvision is missing or broken; install the torchvision that matches your torch (timm and transformers need it)"
else
  log "installing $(grep -v '^#' "$REQ/torch.txt" | xargs)"
  "${PIP[@]}" install -q -r "$REQ/torch.txt"
  KEY="$(torch_key)" || die "torch was installed but does not import"
fi

# ---------------------------------------------------------------- 3. mmcv with ops
pip_install_reqs "$REQ/build.txt"
CACHE_DIR="$WHEELHOUSE/mmcv-$MMCV_VERSION/$KEY"

mmcv_ok() {
  "$PY" -c 'import mmcv._ext; from mmcv.ops import nms, MultiScaleDeformableAttention' 2>/dev/null
}

installed_mmcv="$("$PY" -c 'import importlib.metadata as m; print(m.version("mmcv"))' 2>/dev/null || true)"
if [ "$installed_mmcv" = "$MMCV_VERSION" ] && [ "${MMCV_REINSTALL:-0}" != 1 ] && mmcv_ok; then
  log "mmcv $MMCV_VERSION with compiled ops already installed"
else
  wheel="$(ls "$CACHE_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
  if [ -z "$wheel" ]; then
    log "no cached mmcv wheel for $KEY: building mmcv $MMCV_VERSION from source (tens of minutes on a few cores)"
    build="$(mktemp -d "${TMPDIR:-/tmp}/mmcv-build.XXXXXX")"
    trap 'rm -rf "$build"' EXIT
    "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
      "mmcv==$MMCV_VERSION" -d "$build" 2>/dev/null || true
    if ! ls "$build"/mmcv-"$MMCV_VERSION".tar.gz >/dev/null 2>&1; then
      # `pip download` of an sdist runs its setup.py; fall back to the index's file link.
      "$PY" - "$MMCV_VERSION" "$build" <<'EOF' || die "could not download the mmcv $MMCV_VERSION source archive"
import re, sys, urllib.request
version, dest = sys.argv[1], sys.argv[2]
html = urllib.request.urlopen('https://pypi.org/simple/mmcv/', timeout=120).read().decode()
m = re.search(r'href="([^"]*/mmcv-%s\.tar\.gz)#sha256=([0-9a-f]+)"' % re.escape(version), html)
if not m:
    sys.exit(f'mmcv-{version}.tar.gz not found on the package index')
import hashlib
data = urllib.request.urlopen(m.group(1), timeout=600).read()
if hashlib.sha256(data).hexdigest() != m.group(2):
    sys.exit('sha256 mismatch for the mmcv source archive')
open(f'{dest}/mmcv-{version}.tar.gz', 'wb').write(data)
EOF
    fi
    tar -xzf "$build/mmcv-$MMCV_VERSION.tar.gz" -C "$build"
    src="$build/mmcv-$MMCV_VERSION"

    # The C++ standard: mmcv hard-codes -std=c++17, newer torch headers refuse it. Probe the
    # installed torch's headers with the compiler, from c++17 upwards.
    CXX_BIN="${CXX:-c++}"
    inc="$("$PY" -c 'import sysconfig; from torch.utils.cpp_extension import include_paths; print(" ".join("-I" + p for p in include_paths() + [sysconfig.get_paths()["include"]]))' 2>/dev/null)"
    std=""
    for s in 17 20 23; do
      if echo '#include <torch/extension.h>
int main() { return 0; }' | "$CXX_BIN" -std=c++$s -fsyntax-only $inc -x c++ - >/dev/null 2>&1; then
        std=$s; break
      fi
    done
    [ -n "$std" ] || die "the installed torch headers compile with none of -std=c++17/20/23 using $CXX_BIN"
    log "torch headers need -std=c++$std"
    sed -i "s/-std=c++17/-std=c++$std/g; s#/std:c++17#/std:c++$std#g" "$src/setup.py"

    export MMCV_WITH_OPS=1
    export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
    if [[ "$KEY" == *ops_cuda* ]] && command -v nvcc >/dev/null; then
      export FORCE_CUDA=1
      log "building CUDA ops (nvcc: $(command -v nvcc))"
    else
      export FORCE_CUDA=0
      log "building CPU ops (no usable CUDA device + CUDA torch)"
    fi
    blog="$build/build.log"
    log "compiling with MAX_JOBS=$MAX_JOBS; log: $blog"
    if ! "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$build/dist" "$src" >"$blog" 2>&1; then
      tail -n 40 "$blog" >&2
      die "mmcv $MMCV_VERSION failed to build (full log above: $blog)"
    fi
    mkdir -p "$CACHE_DIR"
    built="$(ls "$build"/dist/mmcv-*.whl | head -n 1)"
    # Copy then rename, so a half-written wheel is never seen as cached.
    cp "$built" "$CACHE_DIR/.partial.whl" && mv "$CACHE_DIR/.partial.whl" "$CACHE_DIR/$(basename "$built")"
    wheel="$CACHE_DIR/$(basename "$built")"
    log "cached $wheel"
  else
    log "using cached mmcv wheel $wheel"
  fi
  "${PIP[@]}" install -q --force-reinstall --no-deps "$wheel"
  # mmcv's own runtime dependencies (addict, yapf, ...) without touching torch.
  "${PIP[@]}" install -q addict packaging Pillow pyyaml yapf opencv-python
fi

# ---------------------------------------------------------------- 4. the rest
log "installing runtime and test requirements"
pip_install_reqs "$REQ/runtime.txt" "$REQ/tests.txt"
log "installing DeepSpeed (Python only; its ops compile on first use)"
DS_BUILD_OPS=0 PIP_FLAGS=--no-build-isolation pip_install_reqs "$REQ/distributed.txt"
if ! "$PY" -c 'import importlib.metadata as m; m.version("internvit-dense")' 2>/dev/null; then
  "${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"
fi

# ---------------------------------------------------------------- 5. verify
"$PY" - <<'EOF' || die "the installed stack does not import; see the traceback above"
import mmcv, mmcv._ext  # noqa: F401
from mmcv.ops import nms, MultiScaleDeformableAttention  # noqa: F401
import torch, mmengine, mmseg, mmdet, timm  # noqa: F401
import backbones, engine, segmentation, detection  # noqa: F401
import deepspeed  # noqa: F401
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
_, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
assert keep.tolist() == [0, 2], keep
print(f'torch {torch.__version__} | mmcv {mmcv.__version__} (ops ok) | mmengine {mmengine.__version__}'
      f' | mmseg {mmseg.__version__} | mmdet {mmdet.__version__} | timm {timm.__version__}')
EOF
touch "$VENV/.internvit-setup-done"
log "done in $(( $(date +%s) - start )) s (environment: $VENV)"
