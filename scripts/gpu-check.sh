#!/usr/bin/env bash
# The GPU check (issues 8 and 11), run once on a lent GPU machine; see scripts/gpu_check.py.
#
# Here, once (writes .whl/ and .gpu/, both git-ignored, about 16 MB together):
#   scripts/gpu-check.sh prepare
# There (device tool: carry [".whl", ".gpu"], timeout_s 600):
#   scripts/gpu-check.sh run        # results and gpu-check.log under $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="webdataset==1.0.2 braceexpand==0.1.7 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5"

case "${1:-run}" in
prepare)
    mkdir -p .whl .gpu
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $WHEELS
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/gpu_check.py prepare .gpu/captions.npz "${@:2}"
    du -sh .whl .gpu ;;
run)
    OUT=${OUT:-out/gpu-check}
    mkdir -p "$OUT"
    exec > >(tee "$OUT/gpu-check.log") 2>&1
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
    python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_train.py tests/test_models.py
    python3 scripts/gpu_check.py run "$OUT" -S train.device=cuda -S evaluator.device=cuda -S evaluate.device=cuda \
        -S train.ngf=64 -S train.ndf=64 -S train.precision=bf16 -S train.channels_last=true -S train.workers=4 \
        -S train.threads=0 "${@:2}" ;;
*)
    echo "usage: scripts/gpu-check.sh prepare|run [-S key=value ...]" >&2; exit 2 ;;
esac
