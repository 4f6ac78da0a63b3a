#!/usr/bin/env bash
# In-context learning on two GUE tasks (tf_0, prom_core_notata) with the HyenaDNA paper's three methods:
#   soft-prompt   P learned prompt vectors, backbone frozen        P in {0, 2, 32, 128}  (P=0: the bare model)
#   k-shot        k demonstrations per class before each query     k in {0, 2, 8}        (no weights change)
#   instruction   whole model tuned on N k-shot prompts (k=2)      N in {16, 64}         (1 epoch, lr 1e-4)
# then one table (device, date, versions from each run's metrics.json), with the fine-tuning result of
# benchmarks/gue_finetune.sh beside it when its outputs are found. Run it on a GPU.
#
#   benchmarks/in_context_gue.sh [DATA_DIR] [OUT_DIR]
#     DATA_DIR  holds <task>/{train,dev,test}.csv.gz   (default: ../shared/data/gue)
#     OUT_DIR   one output directory per task and setting (default: runs/in_context_gue)
#   Environment: MODEL (default: default, the shipped model; or a checkpoint directory), TASKS, SEED,
#     PROMPT_TOKENS, SHOTS, TUNE_SAMPLES, EPOCHS, BATCH, LR (soft prompt), PRECISION, EXTRA (more flags),
#     FINETUNE_DIR (gue_finetune.sh's OUT_DIR, default runs/gue_finetune),
#     GENOMELM (the command; default: genomelm, else "python3 -m genomelm"; "api", or no typer installed:
#     the same flags go straight to genomelm.commands.in_context.run(), as on the GPU machine).
#
# Budget: the paper trains soft prompts for up to 20 epochs at batch 16 (2 x 8 accumulated). This script
# defaults to EPOCHS=3 at BATCH=64 (tf_0 has 32k and prom_core_notata 42k training rows); set EPOCHS=20
# BATCH=16 for the paper's recipe.
set -euo pipefail

DATA=${1:-../shared/data/gue}
OUT=${2:-runs/in_context_gue}
MODEL=${MODEL:-default}
TASKS=${TASKS:-tf_0 prom_core_notata}
SEED=${SEED:-0}
PROMPT_TOKENS=${PROMPT_TOKENS:-0 2 32 128}
SHOTS=${SHOTS:-0 2 8}
TUNE_SAMPLES=${TUNE_SAMPLES:-16 64}
EPOCHS=${EPOCHS:-3}
BATCH=${BATCH:-64}
LR=${LR:-1e-3}
PRECISION=${PRECISION:-fp32}
EXTRA=${EXTRA:-}
FINETUNE_DIR=${FINETUNE_DIR:-runs/gue_finetune}

# The CLI without typer (the GPU machine has none): parse the same flags and call run() directly.
read -r -d '' API_SHIM <<'PY' || true
import argparse, sys
from genomelm.commands.in_context import InContextOptions, run
from genomelm.errors import GenomelmError
from genomelm.log import setup_logging
p = argparse.ArgumentParser(prog="in-context")
p.add_argument("command", choices=["in-context"])
for flag, kind in [("--test", str), ("--output", str), ("--method", str), ("--train", str), ("--dev", str),
                   ("--model", str), ("--prompt", str), ("--prompt-tokens", int), ("--shots", int),
                   ("--tune-samples", int), ("--label-tokens", str), ("--epochs", int), ("--lr", float),
                   ("--batch-size", int), ("--eval-batch-size", int), ("--seed", int), ("--device", str),
                   ("--precision", str), ("--conv-backend", str), ("--threads", int)]:
    p.add_argument(flag, type=kind)
p.add_argument("--strict", action="store_true")
args = {k: v for k, v in vars(p.parse_args()).items() if v is not None and k != "command"}
setup_logging()
try:
    print(run(InContextOptions(**args)).table, file=sys.stderr)
except GenomelmError as exc:
    sys.exit(f"genomelm: error: {exc}")
PY

genomelm_cli() {  # GENOMELM if set ("api": the shim), else genomelm / python3 -m genomelm, else the shim
    if [[ ${GENOMELM:-} == api ]]; then
        python3 -c "$API_SHIM" "$@"
    elif [[ -n ${GENOMELM:-} ]]; then
        # shellcheck disable=SC2086  # GENOMELM may hold several words on purpose
        $GENOMELM "$@"
    elif command -v genomelm >/dev/null 2>&1; then
        genomelm "$@"
    elif python3 -c "import typer" 2>/dev/null; then
        python3 -m genomelm "$@"
    else
        python3 -c "$API_SHIM" "$@"
    fi
}

in_context() {  # in_context TASK NAME FLAGS...: one run, skipped when its metrics.json exists
    local task=$1 name=$2
    shift 2
    local out="$OUT/$task/$name"
    if [[ -f $out/metrics.json ]]; then
        echo "= $out done" >&2
        return
    fi
    local args=(in-context --model "$MODEL" --seed "$SEED" --precision "$PRECISION"
                --train "$DATA/$task/train.csv.gz" --test "$DATA/$task/test.csv.gz" --output "$out" "$@")
    echo "+ genomelm ${args[*]} $EXTRA" >&2
    # shellcheck disable=SC2086  # EXTRA may hold several flags on purpose
    genomelm_cli "${args[@]}" $EXTRA
}

for task in $TASKS; do
    for P in $PROMPT_TOKENS; do
        in_context "$task" "soft-prompt_P$P" --method soft-prompt --prompt-tokens "$P" \
            --dev "$DATA/$task/dev.csv.gz" --epochs "$EPOCHS" --batch-size "$BATCH" --lr "$LR"
    done
    for k in $SHOTS; do
        in_context "$task" "k-shot_k$k" --method k-shot --shots "$k"
    done
    for N in $TUNE_SAMPLES; do
        in_context "$task" "instruction_N$N" --method instruction --shots 2 --tune-samples "$N"
    done
done

python3 - "$OUT" "$FINETUNE_DIR" $TASKS <<'PY'
import glob, json, os, sys

out, finetune_dir, tasks = sys.argv[1], sys.argv[2], sys.argv[3:]
rows, first = [], None
for task in tasks:
    runs = [json.load(open(p)) for p in glob.glob(os.path.join(out, task, "*", "metrics.json"))]
    order = {"soft-prompt": 0, "k-shot": 1, "instruction": 2}
    runs.sort(key=lambda m: (order[m["method"]], m["soft_prompt_tokens"], m["settings"]["shots"],
                             m["settings"]["tune_samples"]))
    for m in runs:
        first = first or m
        s, met = m["settings"], m["metrics"]
        n = s["tune_samples"] if m["method"] == "instruction" else "-"
        shots = "-" if m["shots"]["mean"] is None else f"{m['shots']['mean']:.1f}"
        rows.append(f"| {task} | {m['method']} | {m['soft_prompt_tokens']} | {s['shots']} ({shots}) | {n} | "
                    f"{met['label_tokens']['accuracy']:.3f} | {met['label_tokens']['mcc']:.3f} | "
                    f"{met['vocabulary']['accuracy']:.3f} | {met['vocabulary']['mcc']:.3f} | {m['seconds']:.0f} |")
    ft = os.path.join(finetune_dir, task, "pretrained", "metrics.json")
    if os.path.exists(ft):
        t = json.load(open(ft))["test"]
        rows.append(f"| {task} | finetune (gue_finetune.sh) | - | - | all | {t['accuracy']:.3f} | {t['mcc']:.3f} "
                    f"| - | - | - |")
if first is None:
    sys.exit("no metrics.json found under " + out)
v = first["versions"]
print(f"\nGUE in-context learning, model {first['model']}; {first['device']}, {first['settings']['precision']}, "
      f"{first['date']}, genomelm {v['genomelm']}, torch {v['torch']}\n")
print("| task | method | P | k (mean used) | N | acc (label tokens) | MCC (label tokens) | acc (vocab) "
      "| MCC (vocab) | seconds |")
print("|---|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
PY
