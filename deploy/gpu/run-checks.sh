#!/usr/bin/env bash
# Run ON the GPU host, from the repository root, after deploy/gpu/fetch-wheels.sh filled .whl/ here:
#   device run: carry [".whl"], command "bash deploy/gpu/run-checks.sh", timeout_s 540
# Installs the carried wheels next to the host's CUDA torch, runs the opt-in GPU tests, then the model
# bench in bf16 on CUDA (ViT-B-16-plus-240, random weights: speed does not depend on them) at batch 64
# and 256, K = 1, 4, 64, for both nearest-patch backends. Everything it prints also lands in $OUT.
# The stream bench needs Kafka, S3 and Ray, whose wheels do not fit the 64 MiB carry: it stays a CPU figure.
set -uo pipefail
export OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="/tmp/site:$PWD"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
python3 -m pytest -m gpu -q -p no:cacheprovider tests/model 2>&1 | tee "$OUT/pytest-gpu.txt"
for backend in torch faiss; do
  python3 - "$backend" <<'PY' 2>&1 | tee "$OUT/bench-model-$backend.txt"
import json, os, sys
from model import InCTRLv2Config
from pipelines.model_bench import format_table, run_model_bench

backend = sys.argv[1]
config = InCTRLv2Config(backbone="ViT-B-16-plus-240", pretrained=None, nn_backend=backend)
rows = run_model_bench(config, batches=(64, 256), shots=(1, 4, 64), warmup=2, iters=5, device="cuda")
print(f"ViT-B-16-plus-240 (random weights), bf16 autocast on CUDA, search {backend}")
print(format_table(rows))
with open(os.path.join(os.environ["OUT"], f"bench-model-{backend}.json"), "w") as out:
    json.dump([row.as_dict() for row in rows], out, indent=2)
PY
done
