#!/usr/bin/env bash
# Every GPU figure the GPU step is judged by, from one run (~9 min on an H200), each step under its
# own timeout, logs and figures under $OUT (default gpu-check/): figures.md collects them.
#
#   . .gpu-bundle/setup.sh && bash scripts/gpu_check.sh     # on the GPU machine (../shared/gpu)
#   bash scripts/gpu_check.sh --smoke                       # the same flow on a CPU, ~4 min
#
# 1. the graph path is right on CUDA: 3 epochs graphed vs eager, same seed (close, not equal)
# 2. super_light, 15 epochs, one seed: graph (default), eager, graph + bf16 (goal <= 8 s)
# 3. bench_fused.py: model-epochs/s for K = 1, 3, 8, 32, 128, eager / graph / graph+bf16
# 4. the default space with seeds_per_trial 3 on one GPU: model-epochs/s, slot time training
# 5. retrain_best.py --gpus 1 on that search: its 3 seeds as one cohort, one process
set -u
case "${1:-}" in
  -h|--help)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    echo "Options: --smoke (the CPU flow), --help. Figures land in \$OUT (gpu-check/)."
    exit 0 ;;
  ""|--smoke|--smoke) ;;
  *) echo "error: unknown option $1; use --smoke or --help" >&2; exit 2 ;;
esac
out=${OUT:-gpu-check}
mkdir -p "$out"
figures="$out/figures.md"
if [ "${1:-}" = "--smoke" ]; then
  dev=cpu sub="--train-subset 2000 --test-subset 500" epochs=2 sizes=1,2 samples=2 per=2 gpus=0
  bench_sub=2560 limit=1
else
  dev=cuda sub="" epochs=15 sizes=1,3,8,32,128 samples=16 per=8 gpus=1 bench_sub=30000 limit=4
fi
name="gpu-check-$(date +%H%M%S)"

step() {  # step NAME SECONDS COMMAND...: run it, time it, keep its log and its last lines
  local label=$1 seconds=$2 start rc
  shift 2
  start=$(date +%s.%N)
  timeout "$seconds" "$@" >"$out/$label.log" 2>&1
  rc=$?
  printf '\n## %s (exit %s, %.1f s)\n`%s`\n```\n' "$label" "$rc" \
    "$(python3 -c "print($(date +%s.%N) - $start)")" "$*" >>"$figures"
  tail -n "${TAIL:-6}" "$out/$label.log" >>"$figures"
  echo '```' >>"$figures"
  echo "$label: exit $rc"
}

python3 - >"$figures" <<'EOF'
import torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (smoke)"
print(f"# GPU check: {name}, torch {torch.__version__}")
EOF
git rev-parse HEAD >>"$figures" 2>/dev/null

TAIL=8 step graph_vs_eager 120 python3 - "$dev" "$sub" <<'EOF'
import sys
from tune_mnist.train.config import TrainConfig
from tune_mnist.train.data import load_mnist
from tune_mnist.train.loop import train
device, sub = sys.argv[1], sys.argv[2]
subset = 2000 if sub else 20000
data = load_mnist()
runs = {}
for graph in (False, True):
    config = TrainConfig(arch="super_light", epochs=3, device=device, cuda_graph=graph,
                         train_subset=subset, dropout=0.0)
    [result] = train(config, data)
    runs[graph] = result
    print(f"cuda_graph={graph}: test acc {[round(m['test_acc'], 2) for m in result.history]} "
          f"loss {[round(m['train_loss'], 4) for m in result.history]} "
          f"graphed {[m['graphed'] for m in result.history]} {result.seconds:.1f}s")
eager, graph = runs[False].final, runs[True].final
gap = abs(eager["test_acc"] - graph["test_acc"])
ok = gap < 0.5 and abs(eager["train_loss"] - graph["train_loss"]) < 0.02
ok = ok and (graph["graphed"] or device == "cpu")
print(f"graph vs eager: test acc gap {gap:.2f} points: {'OK' if ok else 'MISMATCH'}")
sys.exit(0 if ok else 1)
EOF

args=(--arch super_light --epochs "$epochs" --seed 0 --device "$dev" $sub)
step train_graph 120 python3 -m tune_mnist.train "${args[@]}" --out "$out/runs/graph.pt"
step train_eager 150 python3 -m tune_mnist.train "${args[@]}" --no-cuda-graph \
  --out "$out/runs/eager.pt"
step train_graph_bf16 120 python3 -m tune_mnist.train "${args[@]}" --precision bf16 \
  --out "$out/runs/bf16.pt"
TAIL=20 step bench_fused 200 python3 scripts/bench_fused.py --device "$dev" --sizes "$sizes" \
  --repeats 1 --train-subset "$bench_sub"

space="$out/default_cohort3.yaml"
sed 's/^settings:/settings:\n  seeds_per_trial: 3/' search_spaces/default.yaml >"$space"
if [ "$dev" = cpu ]; then  # the smoke flow: 2 epochs on subsets
  sed -i 's/^  epochs: 15/  epochs: 2\n  train_subset: 2000\n  test_subset: 500/;
    s/^  grace_period: 3/  grace_period: 1/; s/^  val_size: 5000.*/  val_size: 500/' "$space"
fi
TAIL=25 step search $((limit * 60)) python3 scripts/search.py --gpus "$gpus" \
  --trials-per-gpu "$per" --space "$space" --samples "$samples" --name "$name" --no-report
TAIL=4 step search_rate 60 python3 - "results/$name" <<'EOF'
import json, sys
import pandas as pd
folder = sys.argv[1]
summary = json.load(open(f"{folder}/summary.json"))
epochs = pd.read_parquet(f"{folder}/epochs.parquet")
trials = pd.read_parquet(f"{folder}/trials.parquet")
trained = epochs[~epochs["replayed"]]
done = trials[trials["status"] == "completed"].sort_values("final_val_acc")
open(f"{folder}/best_trial", "w").write(done["trial_id"].iloc[-1] if len(done) else "")
seeds = 3
rate = len(trained) * seeds / summary["wall_s"]
print(f"{len(trials)} trials, {len(trained)} cohort-epochs x {seeds} seeds in "
      f"{summary['wall_s']:.1f}s wall: {rate:.2f} model-epochs/s; "
      f"graphed epochs {int(trained['graphed'].sum())}/{len(trained)}")
EOF
# the best completed trial, passing or not: this step times the cohort, it confirms nothing
best=$(cat "results/$name/best_trial" 2>/dev/null)
TAIL=12 step retrain 240 python3 scripts/retrain_best.py --results "results/$name" --seeds 3 \
  --gpus "$gpus" --trials "${best:-none}" \
  $([ "$dev" = cpu ] && echo "--cohort --train-subset 2000 --test-subset 500")
cp -r "results/$name" "$out/search" 2>/dev/null  # tables, summary, cards: they come back
echo "figures: $figures"
