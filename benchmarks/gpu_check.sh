#!/usr/bin/env bash
# Everything that needs a CUDA GPU, on one GPU in a few minutes (benchmarks/gpu_check.py does the
# work, one check per process, each under its own time limit, so one failure does not hide the
# others):
#   env         torch sees the GPU (versions, bf16 support)
#   bf16        log π under bf16 autocast is close to float32's, and differs from it
#   step_fp32   s/step of on-policy GDC++ on MODEL (default SmolLM2-135M), 256 samples × 64 tokens
#   step_bf16   the same step with training.mixed_precision: bf16
#   methods     every training method for 2 steps on a toy model on the GPU (session.train)
#   toy_plain   a 6-step toy run (session.train, exact KL) on the GPU
#   toy_fsdp    the same run under `accelerate launch --config_file configs/accelerate/fsdp.yaml`
#   fsdp_equal  their final weights agree within 1e-5
#   vllm        vLLM's log q matches HF's log π, before and after a weight sync (SKIP without vllm)
#
#   bash benchmarks/gpu_check.sh [MODEL [--random-weights]]
#   GPU_CHECK_OUT=DIR (default gpu_check_out): one log per check and summary.txt
# --random-weights: MODEL's config and tokenizer with random weights (for a machine that cannot
# fetch the weights; the timing depends on shapes only). Exit status: the number of checks that
# failed or ran out of time.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${GPU_CHECK_OUT:-gpu_check_out}
MODEL=${1:-builtin:smollm2-135m-instruct}
shift $(($# > 0 ? 1 : 0))
EXTRA=("$@")
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
: >"$OUT/summary.txt"
failed=0

check() {
    local name=$1 limit=$2 start=$SECONDS rc status
    shift 2
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=PASS ;;
        3) status=SKIP ;;
        124) status=TIMEOUT ;;
        *) status=FAIL ;;
    esac
    echo "$status $name (exit $rc, $((SECONDS - start)) s) $(grep -h '^RESULT\|^SKIP' "$OUT/$name.log" | tail -n 1)" \
        | tee -a "$OUT/summary.txt"
    if [ $status = FAIL ] || [ $status = TIMEOUT ]; then
        failed=$((failed + 1))
        tail -n 30 "$OUT/$name.log"
    fi
}

check env 60 "$PY" benchmarks/gpu_check.py env
check bf16 90 "$PY" benchmarks/gpu_check.py bf16
check step_fp32 150 "$PY" benchmarks/gpu_check.py step --model "$MODEL" "${EXTRA[@]}"
check step_bf16 150 "$PY" benchmarks/gpu_check.py step --model "$MODEL" "${EXTRA[@]}" --precision bf16
rm -rf "$OUT/runs"
check methods 240 "$PY" benchmarks/gpu_check.py methods --out "$OUT/runs/methods"
check toy_plain 120 "$PY" benchmarks/gpu_check.py toy-run --out "$OUT/runs/plain"
check toy_fsdp 150 "$PY" -m accelerate.commands.launch --config_file configs/accelerate/fsdp.yaml \
    --num_processes 1 benchmarks/gpu_check.py toy-run --out "$OUT/runs/fsdp" --expect-fsdp
check fsdp_equal 60 "$PY" benchmarks/gpu_check.py same-weights "$OUT/runs/plain" "$OUT/runs/fsdp"
check vllm 300 "$PY" benchmarks/gpu_check.py vllm --model "$MODEL" "${EXTRA[@]}"
echo "$failed check(s) failed or timed out; logs in $OUT"
exit $failed
