#!/usr/bin/env bash
# Everything in bench/ that needs a GPU, in one command, into one markdown report (docs/benchmarks.md, "GPU figures"):
#
#   make gpu                          # or: bash bench/gpu.sh [REPORT.md]   (default logs/bench/gpu-DATE.md)
#
#   1. bench/train_step.py model=clip_b32: ViT-B/32 training step at 32 x 12 and 6 x 64 frames, fp32 / bf16 x
#      activation checkpointing off / on x torch.compile off / on: step time, clips/s, peak memory, TFLOP/s
#      against the GPU's dense peak;
#   2. bench/inverse_attention.py device=cuda: the inverse-attention region encoder against the global embedding
#      and grid crops (ViT-B/32, 224 px).
#
# Without a CUDA device it stops at once (exit 2) and writes nothing. A section that fails is recorded in the
# report and the others still run; the exit status is then 1. Environment: PY (the Python; default .venv/bin/python,
# else python3), TRAIN_STEP_ARGS / INVERSE_ATTENTION_ARGS (extra key=value arguments, e.g. TRAIN_STEP_ARGS=compile=false
# to leave out the compiled modes).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
REPORT=${1:-logs/bench/gpu-$(date +%Y-%m-%d_%H-%M-%S).md}

if ! DEVICE=$("$PY" -c 'import sys, torch
if not torch.cuda.is_available():
    sys.exit(1)
print(torch.cuda.get_device_name(0))' 2>/dev/null); then
    echo "error: bench/gpu.sh needs a CUDA device, and torch.cuda.is_available() is False here ($PY: torch" \
        "$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo 'not importable')). The CPU" \
        "benchmarks run without it: make bench, python bench/train_step.py" >&2
    exit 2
fi

mkdir -p "$(dirname "$REPORT")"
TORCH=$("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "unknown")
DIRTY=$(git status --porcelain 2>/dev/null | head -1)
{
    echo "# GPU figures: $DEVICE"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- device: $DEVICE ($(nvidia-smi --query-gpu=memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1 || echo 'nvidia-smi not found'))"
    echo "- torch $TORCH; commit $COMMIT${DIRTY:+ (with uncommitted changes)}"
    echo "- command: bash bench/gpu.sh"
} >"$REPORT"

failed=0
section() {  # section TITLE COMMAND...: run it, its stdout as the section's body, its status noted
    local title=$1
    shift
    local out start status
    out=$(mktemp)
    start=$(date +%s)
    echo "== $title: $*" >&2
    "$@" >"$out"
    status=$?
    {
        echo
        echo "## $title"
        echo
        echo "\`$*\` ($(($(date +%s) - start)) s, exit status $status)"
        echo
        cat "$out"
    } >>"$REPORT"
    rm -f "$out"
    [ "$status" -eq 0 ] || failed=1
}

# shellcheck disable=SC2086  # the extra arguments are meant to split
section "Training step, ViT-B/32" "$PY" bench/train_step.py model=clip_b32 ${TRAIN_STEP_ARGS:-}
# shellcheck disable=SC2086
section "Inverse-attention encoder, ViT-B/32" "$PY" bench/inverse_attention.py device=cuda ${INVERSE_ATTENTION_ARGS:-}

echo "report: $REPORT" >&2
exit "$failed"
