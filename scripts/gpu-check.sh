#!/usr/bin/env bash
# The GPU check (issues 8, 11 and 20), run once on a lent GPU machine; see scripts/gpu_check.py.
#
# Here, once (writes .whl/ and .gpu/, both git-ignored, about 16 MB together):
#   scripts/gpu-check.sh prepare
# There (device tool: carry [".whl", ".gpu"], timeout_s 600):
#   scripts/gpu-check.sh run        # gpu-check.log, run.json and each phase's files under $OUT
# The run stops its phase under way at LIMIT seconds (default 540) and is killed at LIMIT + 30,
# inside the 600 s a device command may take; what finished by then is already under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
# What the device image lacks, at the versions the CPU rehearsal (tests/test_gpu_check.py) runs:
# pydantic 2.14 needs typing-extensions >= 4.16, newer than the image's may be.
WHEELS="webdataset==1.0.2 braceexpand==0.1.7 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0"

case "${1:-run}" in
prepare)
    set -e
    mkdir -p .whl .gpu
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $WHEELS
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/gpu_check.py prepare .gpu/captions.npz "${@:2}"
    du -sh .whl .gpu ;;
run)
    OUT=${OUT:-out/gpu-check}
    LIMIT=${LIMIT:-540}
    mkdir -p "$OUT"
    exec > >(tee "$OUT/gpu-check.log") 2>&1
    python3 -V
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu-check: installing the carried wheels failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    timeout -k 10 $((LIMIT + 30)) python3 scripts/gpu_check.py run "$OUT" --limit "$LIMIT" \
        -S train.device=cuda -S evaluator.device=cuda -S evaluate.device=cuda \
        -S train.ngf=64 -S train.ndf=64 -S train.precision=bf16 -S train.channels_last=true -S train.workers=4 \
        -S train.threads=0 "${@:2}"
    rc=$?
    echo "gpu-check: exit $rc"; exit $rc ;;
*)
    echo "usage: scripts/gpu-check.sh prepare|run [-S key=value ...]" >&2; exit 2 ;;
esac
