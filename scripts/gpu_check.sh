#!/usr/bin/env bash
# The checks only a GPU can run, in one command and at most ~15 minutes (the limits' sum; far less expected) on one
# H100/H200-class GPU with 16 cores:
#   1. the `gpu` tests (bf16 step, channels_last, device-side augmentation against the CPU rendering, CUDA RNG
#      through a checkpoint, the MFU peak);
#   2. one Ray Train run of the embedded default on the GPU (python trainer/run.py scaling.use_gpu=true ...),
#      then the offline evaluation of its checkpoint (feature extraction with loader workers);
#   3. the throughput table: sequences/s, TFLOP/s and MFU of the trainer's step (scripts/benchmark_gpu.py);
#   4. the offline extraction on the GPU, in-process against eval.loader_workers, beside the training loader
#      (python -m scripts.benchmark_data --only extraction --device cuda);
#   5. the run of step 2 (views rendered on the GPU: data.render_on=auto) beside one that renders them in the
#      loaders (data.render_on=loader) and one compiled (train.compile=true): samples/s, train/mfu and
#      train/data_wait_frac of their steady windows side by side (python -m scripts.window_table).
#
#   bash scripts/gpu_check.sh            # from anywhere; logs and the table under $GPU_CHECK_OUT (a temp folder)
#
# Without a GPU it runs what a CPU can (the gpu tests, which skip saying why; the throughput code on the CPU)
# and names the steps it skipped.
#
# It uses the project's .venv as it is. Without one it creates it: the CUDA build of torch==2.13.0 from PyPI,
# then `pip install -e .[dev]` (that needs the network). The embedded default needs Fashion-MNIST: in
# ~/seq-jepa/data/cache, from the network, or from FASHION_MNIST_DIR (a folder of the four IDX files).
# Every step runs under its own time limit; the script goes on after a failure and exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
OUT=${GPU_CHECK_OUT:-$(mktemp -d -t seq-jepa-gpu-check-XXXX)}
mkdir -p "$OUT"
if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV: torch==2.13.0 (CUDA build, PyPI), then the project with its dev extras"
    python3 -m venv "$VENV" || exit 1
    "$VENV/bin/pip" install --quiet --index-url https://pypi.org/simple torch==2.13.0 || exit 1
    "$VENV/bin/pip" install --quiet -e ".[dev]" || exit 1
fi
PY="$VENV/bin/python"
# With a GPU: everything. Without one (a CPU build, or no device): the part a CPU can run, saying what it skips.
if "$PY" - <<'EOF'
import sys
import torch
if torch.version.cuda is None or not torch.cuda.is_available():
    what = "a CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, but no GPU visible"
    print(f"torch {torch.__version__} ({what}): no GPU here")
    sys.exit(1)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
EOF
then GPU=1; else GPU=0; fi
export RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S=120 MLFLOW_DISABLE_TELEMETRY=true RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
SOURCE=()
if [ -n "${FASHION_MNIST_DIR:-}" ]; then SOURCE=("data.source_dir=$FASHION_MNIST_DIR"); fi

FAILED=()
step() {  # step NAME SECONDS COMMAND...: run it under a time limit, its output to the terminal and $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo
    echo "== $name (at most ${limit} s)"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local code=${PIPESTATUS[0]}
    echo "== $name: exit $code after $((SECONDS - start)) s"
    if [ "$code" -ne 0 ]; then FAILED+=("$name (exit $code)"); fi
}

if [ "$GPU" -eq 0 ]; then
    echo "== the CPU part only: the gpu tests (each skips, saying why) and the throughput code on the CPU"
    echo "== skipped without a GPU: ray-train-gpu (and its loader-mode and compiled variants), evaluate-gpu, the GPU"
    echo "   throughput table, extraction on cuda"
    step gpu-tests 300 "$PY" -m pytest -q -m gpu -rs -p no:cacheprovider tests/
    step throughput-cpu 300 "$PY" scripts/benchmark_gpu.py --cpu
else
    step gpu-tests 150 "$PY" -m pytest -q -m gpu -rs -p no:cacheprovider tests/
    step ray-train-gpu 120 "$PY" trainer/run.py scaling.use_gpu=true scaling.num_workers=1 scaling.cpus_per_worker=8 \
        data.loader_workers=4 train.epochs=1 train.steps_per_epoch=60 probe.val_batches=4 "${SOURCE[@]}" \
        run.name=gpu-check run.storage_path="$OUT/runs" tracking.tracking_uri="sqlite:///$OUT/mlflow.db"
    step evaluate-gpu 60 "$PY" -m trainer.evaluate "$OUT/runs/gpu-check" --no-log eval.train_samples=4096 \
        eval.val_samples=2048 eval.epochs=5 eval.loader_workers=4 data.cache_dir="$OUT/cache"
    step throughput 120 "$PY" scripts/benchmark_gpu.py
    step extraction 120 "$PY" -m scripts.benchmark_data --only extraction --device cuda --objects 128
    for variant in "loader data.render_on=loader" "compiled train.compile=true"; do
        read -r name override <<< "$variant"
        step "ray-train-gpu-$name" 150 "$PY" trainer/run.py scaling.use_gpu=true scaling.num_workers=1 \
            scaling.cpus_per_worker=8 data.loader_workers=4 train.epochs=1 train.steps_per_epoch=60 probe.val_batches=2 \
            "$override" "${SOURCE[@]}" run.name="gpu-check-$name" run.storage_path="$OUT/runs" \
            tracking.tracking_uri="sqlite:///$OUT/mlflow.db"
    done
    step data-modes-table 30 "$PY" -m scripts.window_table "sqlite:///$OUT/mlflow.db" gpu-check gpu-check-loader \
        gpu-check-compiled
fi
echo
echo "logs: $OUT"
if [ ${#FAILED[@]} -ne 0 ]; then
    printf 'FAILED: %s\n' "${FAILED[@]}"
    exit 1
fi
if [ "$GPU" -eq 1 ]; then echo "all GPU checks passed"; else echo "the CPU part passed; run this on a GPU machine for the rest"; fi

