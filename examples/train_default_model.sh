#!/usr/bin/env bash
# The exact recipe of genomelm's shipped default model (genomelm/pretrained/): HyenaDNA small-32k
# (d_model 256, 4 layers, l_max 32770) pretrained with `genomelm pretrain` on GRCh37 chrX 1-65,000,000,
# holding out NC_000023.10:65,000,001-70,000,000 (the file's record 'X' ends at 69,999,930).
#
#   bash examples/train_default_model.sh GRCh37_chrX_1-70M.fa.gz runs/default-chrX
#
# Needs one CUDA GPU (the shipped model: one NVIDIA H200, 860 s of training, 2026-11-22). It was trained in
# two jobs of under 10 minutes: the first stopped itself at step 2192 (--time-limit), the second continued
# it with `--resume` (same losses and weights as one uninterrupted run: tests/commands/test_pretrain.py).
# Here one uninterrupted run; add --time-limit SECONDS and rerun with --resume RUN_DIR to split it likewise.
set -euo pipefail

FASTA=${1:?usage: $0 GRCh37_chrX_1-70M.fa.gz [RUN_DIR]}
RUN=${2:-runs/default-chrX}
HELDOUT="X:65,000,001-"  # 1-based inclusive, to the end of the record

# 4532 steps = what fits in ~14 minutes of an H200 at the measured 3.3 M tokens/s; warmups: 1/25 (lr) and
# 1/7 (sequence length 64 -> 16384, same tokens per step) of the steps.
genomelm pretrain --fasta "$FASTA" -o "$RUN" \
  --preset small-32k --seq-len 32768 --batch-size 16 \
  --steps 4532 --lr 1.5e-3 --warmup-steps 181 --seqlen-warmup 647 --rc-aug \
  --val-regions "$HELDOUT" --val-windows 0 --eval-every 500 --save-every 250 --log-every 25 \
  --precision bf16 --conv-backend cuda --seed 0

# Held-out perplexity (both strands, fp32) and the Markov baselines of the model card.
genomelm evaluate "$FASTA" --model "$RUN/checkpoint" --regions "$HELDOUT" --both-strands \
  --precision fp32 --json "$RUN/heldout_eval.json"
python benchmarks/markov_baseline.py --fasta "$FASTA" --train X:1-65,000,000 --test "$HELDOUT" --orders 2-12

# Package the weights (config.json + model.safetensors + the model card) where `--model` defaults to.
python - "$RUN/checkpoint" <<'EOF'
import sys

from genomelm.formats.checkpoint import builtin_model_dir, load_model, save_model

old_card = builtin_model_dir() / "README.md"
card = old_card.read_text() if old_card.exists() else None  # the shipped card: update its figures by hand
save_model(load_model(sys.argv[1]), builtin_model_dir(), card=card, name="genomelm-default")
print("wrote", builtin_model_dir())
EOF
