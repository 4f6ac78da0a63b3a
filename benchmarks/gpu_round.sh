#!/usr/bin/env bash
# The GPU checks and the performance figures of the README, in stages that each fit a 10-minute GPU session:
#
#   benchmarks/gpu_round.sh tests                      # pytest -m gpu (every GPU test)
#   benchmarks/gpu_round.sh genome  CHRX.fa            # score-genome end to end vs model-only, lookup rate
#   benchmarks/gpu_round.sh training OFFICIAL.py       # filter gradient; fast vs precise training; the official model
#   benchmarks/gpu_round.sh inference OFFICIAL.py      # inference against the official model; the GEMM floor
#   benchmarks/gpu_round.sh embed   CHRX.fa            # embed end to end vs model-only
#
# CHRX.fa: an uncompressed FASTA (the README's figures use GRCh37 chrX 1-70 Mb); OFFICIAL.py: the official
# HyenaDNA standalone model file (benchmarks/official_anchor.py says what it needs). Each stage prints the
# device, date and versions through the scripts it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: benchmarks/gpu_round.sh tests|genome|training|inference|embed [PATH]}

case "$stage" in
  tests)
    python3 -m pytest -q -m gpu tests
    ;;
  genome)
    fasta=${2:?the genome stage needs a FASTA}
    python3 benchmarks/profile_genome.py --fasta "$fasta" --precision bf16
    python3 benchmarks/genome_throughput.py --fasta "$fasta" --precision bf16 --e2e-repeats 3
    ;;
  training)
    official=${2:?the training stage needs the official model file}
    python3 benchmarks/filter_grad.py
    python3 benchmarks/fast_backward.py --repeats 5
    python3 benchmarks/profile_model.py --train --config small-32k:256x1024 --config small-32k:8x32768 \
      --config medium-160k:2x131072
    python3 benchmarks/official_anchor.py --official "$official" --inference --precision bf16 --repeats 5
    ;;
  inference)
    official=${2:?the inference stage needs the official model file}
    python3 benchmarks/official_anchor.py --official "$official" --training --repeats 5
    python3 benchmarks/gemm_floor.py --measure --official "$official" --repeats 5
    ;;
  embed)
    fasta=${2:?the embed stage needs a FASTA}
    python3 benchmarks/embed_end_to_end.py --fasta "$fasta"
    ;;
  *)
    echo "unknown stage: $stage (tests, genome, training, inference, embed)" >&2
    exit 2
    ;;
esac
