#!/usr/bin/env bash
# What only a CUDA machine can check, in one short run (about 10 minutes on one GPU) that ends with one table:
#   * every trainer at 64 px for a short run, fp32 and --precision bf16: images/s, mean GPU utilisation
#     (nvidia-smi sampled every 200 ms), peak GPU memory; bf16 + --compile (dcgan, wgan-gp), fp16 (wgan-gp: the
#     scaled penalty), bf16 + --augment diffaug (dcgan)
#   * a 1-process NCCL DDP run under torchrun (the multi-GPU code path on one GPU)
#   * gandata eval on the GPU: N_EVAL generated and N_EVAL real images through the FID Inception (random weights:
#     the real ones are a download)
#
#   bash benchmarks/gpu.sh              # KIMG=20 WORKERS=8 N_EVAL=10000 to change the sizes
#   DEVICE=cpu KIMG=0.5 N_EVAL=64 WORKERS=1 bash benchmarks/gpu.sh    # a dry run of the script itself on a CPU
#
# Needs: python3 with a CUDA torch, and gandata's dependencies importable. Where gandata is not installed it runs
# from the checkout (PYTHONPATH); a missing package is named in one line. Wheels in ./.whl are installed first (into
# /tmp/gandata-site), for a machine that cannot download: the training path needs only webdataset and braceexpand
# beyond a usual CUDA image (`pip download --no-deps -d .whl webdataset==1.0.2 braceexpand==0.1.7`, pure Python).
set -uo pipefail
cd "$(dirname "$0")/.."
KIMG=${KIMG:-20}
WORKERS=${WORKERS:-8}
N_EVAL=${N_EVAL:-10000}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-$(mktemp -d)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/gandata-site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/gandata-site"
fi
T0=$(date +%s)

DEVICE=$DEVICE $PY - <<'EOF' || exit 1
import importlib, sys
missing = [m for m in ("torch", "webdataset", "braceexpand", "cv2", "PIL", "typer", "rich", "aiohttp", "numpy")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu.sh: missing Python packages: {', '.join(missing)} (pip install them, or carry wheels)")
import os, torch
if os.environ.get("DEVICE", "cuda") == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu.sh: torch sees no CUDA GPU; this script checks what the CPU cannot")
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (dry run on the CPU)"
print(f"# {name}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
EOF

# 4 096 distinct 64-px images as gandata shards (the same maker as benchmarks/train.py)
$PY - "$WORK" <<'EOF' || exit 1
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from train import make_data
make_data(Path(sys.argv[1]), 4096)
EOF
SHARDS="$WORK/shards"
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"

sample_gpu() {  # $1: file to write "util,mem" lines to, until killed
  command -v nvidia-smi > /dev/null || return 0
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 > "$1" 2>/dev/null
}

run_one() {  # $1 label, $2 kind, then the command's extra arguments
  local label=$1 kind=$2; shift 2
  local out="$WORK/runs/$label" smi="$WORK/smi-$label.csv"
  rm -rf "$out"
  sample_gpu "$smi" & local smi_pid=$!
  local t=$(date +%s.%N)
  "$@" > "$WORK/$label.json" 2> "$WORK/$label.err"
  local rc=$?
  kill $smi_pid 2>/dev/null; wait $smi_pid 2>/dev/null
  $PY - "$label" "$kind" "$rc" "$out" "$smi" "$WORK/$label.json" "$WORK/$label.err" "$t" >> "$RESULTS" <<'EOF'
import json, sys, time
from pathlib import Path
label, kind, rc, out, smi, summary, err, t = sys.argv[1:]
row = {"run": label, "kind": kind, "ok": rc == "0", "wall_s": round(time.time() - float(t), 1)}
try:
    rows = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows[1:]] or [rows[-1]["images_per_s"]]  # the first tick holds the start-up
    row["img_per_s"] = round(sorted(rates)[len(rates) // 2])
except (OSError, ValueError, IndexError, KeyError):
    pass
try:
    s = json.loads(Path(summary).read_text())
    row["peak_gpu_mib"] = s.get("peak_gpu_mib")
    row["ddp"] = s.get("ddp")
    if "results" in s:  # gandata eval
        row["eval"] = s["results"][0]
except (OSError, ValueError):
    pass
vals = []
for line in Path(smi).read_text().splitlines() if Path(smi).exists() else []:
    try:
        vals.append([float(v) for v in line.split(",")])
    except ValueError:
        pass
busy = [v for v in vals if v[0] > 0] or vals
if busy:
    row["gpu_util_mean"] = round(sum(v[0] for v in busy) / len(busy))
    row["smi_mem_max_mib"] = round(max(v[1] for v in vals))
if rc != "0":
    row["error"] = Path(err).read_text()[-400:].strip().splitlines()[-1:] if Path(err).exists() else []
print(json.dumps(row))
EOF
  echo "  $label: exit $rc, $(( $(date +%s) - T0 )) s so far" >&2
}

COMMON=(--shards "$SHARDS" --kimg "$KIMG" --batch 64 --device "$DEVICE" --workers "$WORKERS" --log-kimg 2
        --snap-kimg "$KIMG" --augment none --json)
only_wgan() { [ "$1" = wgan ] && echo --no-critic-warmup; }  # WGAN's 100-step warm-up would be most of a short run
for kind in dcgan lsgan wgan wgan-gp cdcgan; do
  for prec in fp32 bf16; do
    run_one "$kind-$prec" "$kind" $PY -m gandata.cli train "$kind" "${COMMON[@]}" $(only_wgan "$kind") \
      --precision "$prec" --out "$WORK/runs/$kind-$prec"
  done
done
# torch.compile (the first tick holds the compilation; the rate is the median of the later ones), fp16 with its
# gradient scalers (the penalty's scaled double backward), and what DiffAugment costs a step
for kind in dcgan wgan-gp; do
  run_one "$kind-bf16-compile" "$kind" $PY -m gandata.cli train "$kind" "${COMMON[@]}" --precision bf16 --compile \
    --out "$WORK/runs/$kind-bf16-compile"
done
if [ "$DEVICE" = cuda ]; then  # a CPU has no fp16 kernels: emulated, a dry run would take many minutes here
  run_one "wgan-gp-fp16" "wgan-gp" $PY -m gandata.cli train wgan-gp "${COMMON[@]}" --precision fp16 \
    --out "$WORK/runs/wgan-gp-fp16"
fi
run_one "dcgan-bf16-diffaug" "dcgan" $PY -m gandata.cli train dcgan "${COMMON[@]}" --precision bf16 \
  --augment diffaug --out "$WORK/runs/dcgan-bf16-diffaug"
# the multi-GPU path (NCCL process group, DDP-wrapped G and D) on one GPU
run_one "wgan-gp-ddp1" "wgan-gp" $PY -m torch.distributed.run --standalone --nproc-per-node=1 -m gandata \
  train wgan-gp "${COMMON[@]}" --out "$WORK/runs/wgan-gp-ddp1"
# eval: N_EVAL generated images through the FID Inception on the GPU
run_one "eval" "wgan-gp" $PY -m gandata.cli eval "$WORK/runs/wgan-gp-fp32" --real "$SHARDS" --n "$N_EVAL" \
  --n-real "$N_EVAL" --metrics fid,kid --extractor benchmarks/eval.py:random_inception --device "$DEVICE" --json

$PY - "$RESULTS" "$N_EVAL" "$KIMG" "$(( $(date +%s) - T0 ))" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
n_eval, kimg, total = int(sys.argv[2]), sys.argv[3], sys.argv[4]
print(f"\n64 px, batch 64, {kimg} kimg per run; GPU utilisation = mean of nonzero nvidia-smi samples; "
      f"whole script {total} s\n")
print("| run | ok | images/s | GPU util % | peak GPU memory (torch) MiB | nvidia-smi max MiB | wall s |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    rate = r.get("img_per_s", "—")
    if r["run"] == "eval" and r.get("eval"):
        rate = f"{n_eval / max(r['wall_s'], 1e-9):.0f} (whole command, {n_eval} images + reals)"
    name = r["run"] + (" (torchrun, DDP)" if r.get("ddp") else "")
    print(f"| {name} | {'yes' if r['ok'] else 'NO: ' + ' '.join(r.get('error', []))} | {rate} | "
          f"{r.get('gpu_util_mean', '—')} | {r.get('peak_gpu_mib') or '—'} | {r.get('smi_mem_max_mib', '—')} | "
          f"{r['wall_s']} |")
EOF
