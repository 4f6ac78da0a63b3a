"""Where `score-variants --method llr`'s host time goes: one run of the command, its stages timed.

With --stub the model is a near-free stand-in (profile_genome.StubModel: zero hidden states), so
what remains is the host work that the device would wait for if it were on the critical path:

- read + plan records: VCF parsing, REF checks, N counts (Planner.plan)
- tiles + tokens: FASTA tiles, token ids, reverse complement of each pass (llr._plan_block)
- pad + copy inputs: a chunk's padded token ids into the (pinned) staging buffer, one copy (llr._copy_inputs)
- queue: the launches of a batch's forward pass and head (llr._queue_batch)
- log-softmax + ALT gathers: per-block log-probabilities (llr._fill); llr of the SNVs: the ALT - REF
  differences of a block's SNVs (llr._block_results)
- set scores: values into the Sites (VariantScorer._set_llr)
- INFO + write: INFO fields and the VCF writer (vcf.set_info, VariantWriter.write)

With chunks in flight (engine.CHUNKS_IN_FLIGHT), all of it but "pad + copy inputs" and "queue" can overlap
the device's passes of the chunks queued before; the table says how much device time per pass it can hide.

    python benchmarks/profile_variants.py --stub --genome-bp 5000000            # host cost, any machine
    python benchmarks/profile_variants.py --model default --precision bf16       # on a GPU: real passes
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

import torch
from profile_genome import TIMES, StubModel, timed
from variant_throughput import make_genome, make_queries, write_vcf

from genomelm.commands import score_variants
from genomelm.formats import vcf
from genomelm.variants import engine, llr, planner

STAGES = {
    "read + plan records": (planner.Planner, "plan"),
    "tiles + tokens": (llr, "_plan_block"),
    "pad + copy inputs": (llr, "_copy_inputs"),
    "queue": (llr, "_queue_batch"),
    "log-softmax + ALT gathers": (llr, "_fill"),
    "llr of the SNVs": (llr, "_block_results"),
    "set scores": (engine.VariantScorer, "_set_llr"),
    "INFO fields": (vcf, "set_info"),
    "VCF write": (vcf.VariantWriter, "write"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genome-bp", type=int, default=5_000_000)
    parser.add_argument("--per-kb", type=float, default=1.0)
    parser.add_argument("--model", default="default")
    parser.add_argument("--stub", action="store_true", help="a near-free model: host cost only")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fasta, seq = make_genome(tmp, args.genome_bp, 0)
        queries = make_queries(seq, args.per_kb, 0)
        vcf_path = write_vcf(tmp / "in.vcf", queries, {"chr1": len(seq)})
        if args.stub:
            score_variants.load_inference_model = lambda *a, **k: StubModel().to(args.device)
        for stage, (owner, name) in STAGES.items():
            setattr(owner, name, timed(stage, getattr(owner, name)))
        opts = score_variants.ScoreVariantsOptions(
            str(vcf_path), str(fasta), str(tmp / "out.vcf.gz"), model=args.model, batch_size=args.batch_size,
            device=args.device, precision=args.precision,
        )  # fmt: skip
        started = time.perf_counter()
        summary = score_variants.run(opts)
        wall = time.perf_counter() - started
    report(args, wall, summary)


def report(args, wall: float, summary) -> None:
    passes = summary.forward_passes
    print(
        f"# score-variants host profile — device {args.device}; date {datetime.date.today()}; "
        f"torch {torch.__version__}; "
        f"model {'stub' if args.stub else args.model}; {args.genome_bp:,} bp random genome, {summary.records} SNVs, "
        f"{passes} passes, batch {args.batch_size}, {args.precision}"
    )
    print(f"# wall {wall:.2f} s ({1000 * wall / max(passes, 1):.2f} ms per pass)")
    print("| stage | seconds | calls | ms per pass | share of wall |")
    print("|---|---|---|---|---|")
    for (_, stage), (seconds, calls) in sorted(TIMES.items(), key=lambda item: -item[1][0]):
        print(f"| {stage} | {seconds:.2f} | {calls} | {1000 * seconds / max(passes, 1):.3f} | {seconds / wall:.0%} |")


if __name__ == "__main__":
    main()
