#!/usr/bin/env bash
# Fine-tuning quality on two GUE tasks (prom_core_notata, tf_0): test MCC and AUROC for
#   (a) pretrained  the base model fine-tuned end to end
#   (b) random      the same architecture from random weights, same recipe (--random-init)
#   (c) probe       the pretrained backbone frozen, linear head only (--freeze-backbone)
# then one table (device, date, versions from each run's metrics.json). Run it on a GPU (bf16 autocast).
#
#   benchmarks/gue_finetune.sh [DATA_DIR] [OUT_DIR]
#     DATA_DIR  holds <task>/{train,dev,test}.csv.gz   (default: ../shared/data/gue)
#     OUT_DIR   one fine-tuned checkpoint per task and setting (default: runs/gue_finetune)
#   Environment: MODEL (default: default, the shipped model; or a checkpoint directory),
#     TASKS, SETTINGS, SEED, EPOCHS, LR, BATCH, PROBE_EPOCHS, PROBE_LR, PROBE_BATCH, EXTRA (more finetune flags),
#     GENOMELM (the command; default: genomelm, e.g. "python -m genomelm"; needs typer installed).
# Cost: one epoch of a small-32k-sized model over prom_core_notata (42k x 70 bp) took ~20 s on an H200
# (bf16, 2026-11-22), so a 10-epoch run is ~3-4 min; give each task or setting its own call
# (TASKS=tf_0 SETTINGS=random ...) to fit a 10-minute device slot, then rerun with no training to print
# the table from the saved metrics: SETTINGS=none prints it for whatever is under OUT_DIR.
#
# Published references (frozen embeddings + classifier, AUROC; Nature Communications 2025 benchmark):
# HyenaDNA 0.852 on "Promoter NonTATA 70 bps" (~prom_core_notata) and 0.830 on "Human TFBS 1" (~tf_0).
set -euo pipefail

DATA=${1:-../shared/data/gue}
OUT=${2:-runs/gue_finetune}
MODEL=${MODEL:-default}
TASKS=${TASKS:-prom_core_notata tf_0}
SETTINGS=${SETTINGS:-pretrained random probe}
SEED=${SEED:-42}
EPOCHS=${EPOCHS:-10}
LR=${LR:-6e-4}
BATCH=${BATCH:-64}
PROBE_EPOCHS=${PROBE_EPOCHS:-30}
PROBE_LR=${PROBE_LR:-3e-3}
PROBE_BATCH=${PROBE_BATCH:-256}
EXTRA=${EXTRA:-}
GENOMELM=${GENOMELM:-genomelm}

for task in $TASKS; do
    for setting in $SETTINGS; do
        args=(finetune --model "$MODEL" --seed "$SEED" --force
              --train "$DATA/$task/train.csv.gz" --val "$DATA/$task/dev.csv.gz" --test "$DATA/$task/test.csv.gz"
              -o "$OUT/$task/$setting")
        case $setting in
            pretrained) args+=(--epochs "$EPOCHS" --lr "$LR" --batch-size "$BATCH" --rc-aug) ;;
            random)     args+=(--random-init --epochs "$EPOCHS" --lr "$LR" --batch-size "$BATCH" --rc-aug) ;;
            probe)      args+=(--freeze-backbone --epochs "$PROBE_EPOCHS" --lr "$PROBE_LR" --batch-size "$PROBE_BATCH"
                               --patience 5 --rc-aug) ;;
            none)       continue ;;
            *) echo "unknown setting $setting (pretrained, random, probe, none)" >&2; exit 2 ;;
        esac
        # shellcheck disable=SC2086  # GENOMELM and EXTRA may hold several words on purpose
        echo "+ $GENOMELM ${args[*]} $EXTRA" >&2
        # shellcheck disable=SC2086
        $GENOMELM "${args[@]}" $EXTRA
    done
done

python3 - "$OUT" $TASKS <<'PY'
import json, os, sys

out, tasks = sys.argv[1], sys.argv[2:]
rows, first = [], None
for task in tasks:
    for setting in ("pretrained", "random", "probe"):
        path = os.path.join(out, task, setting, "metrics.json")
        if not os.path.exists(path):
            continue
        m = json.load(open(path))
        first = first or m
        t = m["test"]
        auroc = "n/a" if t["auroc"] is None else f"{t['auroc']:.3f}"
        rows.append(f"| {task} | {setting} | {t['mcc']:.3f} | {auroc} | {t['accuracy']:.3f} | "
                    f"{m['best_epoch']}/{m['epochs_run']} | {m['seconds']:.0f} |")
if first is None:
    sys.exit("no metrics.json found under " + out)
v = first["versions"]
print(f"\nGUE fine-tuning, base model {first['training']['base_model']}; {first['device']}, {first['precision']}, "
      f"{first['date']}, genomelm {v['genomelm']}, torch {v['torch']}\n")
print("| task | setting | test MCC | test AUROC | test accuracy | best epoch | seconds |")
print("|---|---|---|---|---|---|---|")
print("\n".join(rows))
PY
