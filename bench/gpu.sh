#!/bin/bash
# The GPU checks of issue "First figures on a GPU", in as few calls as a short lease allows.
#   bench/gpu.sh steps tests extras   # the paper preset's steps on CUDA, the suite, DDP/compile
#   bench/gpu.sh bench                # make bench on CUDA (VOC size) -> $OUT/RESULTS_cuda.md
# Logs and results go to $OUT (default bench/gpu_out). Offline: --pretrained none and friends.
# Wheels that the machine lacks (pydensecrf2 for CPython 3.12) are installed from .whl/.
set -u -o pipefail
OUT=${OUT:-bench/gpu_out}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
$PY -c "import torch, pydensecrf; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee -a "$OUT/gpu.txt"

# Paper models, untrained weights, on 50 generated VOC-size (500x375) images. Epochs and
# iterations are cut so that every step runs in a few minutes; bench gives the rates.
DATA=/tmp/gpu_voc
RUN=(run_sample.py --preset paper --voc12_root $DATA/VOC2012 --pretrained none
     --vit_pretrained none --orand_pretrained none --seg_pretrained none --irn_trunk none
     --num_workers 16 --cam_epochs 2 --vit_epochs 2 --orand_iters 200 --irn_epochs 3
     --seg_epochs 5 --seg_splits val,test)

for part in "$@"; do
    t0=$(date +%s)
    case $part in
    steps)
        [ -d $DATA/VOC2012 ] || $PY -m voc12.toy --out $DATA --n_train 50 --n_aug 0 --n_val 10 \
            --n_test 10 --size 500
        # peak GPU memory of the whole run, sampled twice a second
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 \
            >"$OUT/steps_mem.csv" 2>/dev/null &
        smi=$!
        timeout 320 $PY "${RUN[@]}" --work_dir /tmp/gpu_run 2>&1 | grep -v "it/s]$" \
            | tee "$OUT/steps.log"
        kill $smi
        cp /tmp/gpu_run/result/step_times.json /tmp/gpu_run/result/summary.md "$OUT/" 2>/dev/null
        sort -n "$OUT/steps_mem.csv" | tail -1 | sed 's/^/peak MiB used on the card: /' \
            | tee -a "$OUT/steps.log" ;;
    tests)
        timeout 230 $PY -m pytest -q -p no:cacheprovider tests 2>&1 | tail -40 | tee "$OUT/tests.log" ;;
    extras)
        # NCCL under torchrun (one rank) and torch.compile on the CAM trainer
        timeout 70 $PY -m torch.distributed.run --standalone --nproc_per_node 1 "${RUN[@]}" \
            --work_dir /tmp/gpu_ddp --steps train_cam,make_cam --cam_epochs 1 2>&1 \
            | grep -v "it/s]$" | tail -8 | tee "$OUT/extras.log"
        timeout 90 $PY "${RUN[@]}" --work_dir /tmp/gpu_compile --steps train_cam --cam_epochs 2 \
            --compile 2>&1 | grep -v "it/s]$" | tail -8 | tee -a "$OUT/extras.log" ;;
    bench)
        timeout 420 $PY bench/bench.py --sizes voc --out "$OUT/RESULTS_cuda.md" 2>&1 \
            | tee "$OUT/bench.log" ;;
    *) echo "unknown part $part" ;;
    esac
    echo "== $part: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/parts.log"
done
