"""score-genome throughput: end to end (every track written) against the model alone, in one run.

On one genome (default: ../shared/data chrX 1-70 Mb), one model (default: the shipped one), one
device and precision, this script measures

- model-only: the forward passes score-genome runs (forward and reverse-complement, context +
  stride - 1 tokens each, --batch-size blocks per call) plus the head, on --model-blocks blocks
  sampled from the genome, with CUDA events after warm-up: Mbp of genome per second;
- end to end: `score_genome.run()` on the whole genome, wall clock: FASTA reads, passes, segments,
  the track-writer processes, calibration, manifest; Mbp/s, their ratio, the extrapolated time for
  a 3.1 Gbp genome, the disk bytes per Mbp (the store, and the peak with the segments);
- lookup: `score-variants --precomputed` on one CPU thread over a VCF of --lookup-snvs SNVs spread
  over the genome: variants per second (no model).

    python benchmarks/genome_throughput.py --fasta GRCh37_chrX_1-70M.fa.gz --precision bf16 --out $OUT
"""

from __future__ import annotations

import argparse
import datetime
import gc
import gzip
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pysam
import torch
from _timing import seconds

from genomelm.commands import score_genome, score_variants
from genomelm.commands._common import load_inference_model
from genomelm.formats.fasta import FastaSource
from genomelm.runtime import autocast, pad_right
from genomelm.tokenizer import PAD_ID, reverse_complement_ids
from genomelm.variants import Reference, llr_tiling

DEFAULT_FASTA = Path(__file__).resolve().parents[2] / "shared" / "data" / "GRCh37_chrX_1-70M.fa.gz"


def plain_fasta(path: Path, directory: Path) -> Path:
    """score-genome needs random access: a plain copy of a gzip (not BGZF) FASTA."""
    with open(path, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            return path
    target = directory / "genome.fa"
    with gzip.open(path, "rb") as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out, 16 << 20)
    return target


@torch.no_grad()
def model_only(args, fasta: Path, device: torch.device) -> dict:
    """Mbp/s of the passes alone (forward + reverse, whole blocks, head included)."""
    model = load_inference_model(args.model, device)
    score_genome._use_cuda_graphs(
        model, device
    )  # as score-genome runs it (no gain here: the passes alone are GPU-bound)
    tiling = llr_tiling(args.context, args.stride, model.l_max)
    with FastaSource(str(fasta)) as source:
        reference = Reference(source)
        contig, length = max(reference.lengths.items(), key=lambda item: item[1])
        rng = np.random.default_rng(0)
        blocks = rng.integers(1, length // tiling.stride - 1, args.batch_size)
        rows = [reference.ids(contig, b * tiling.stride - tiling.context, (b + 1) * tiling.stride - 1) for b in blocks]
    tokens = pad_right(rows + [reverse_complement_ids(r) for r in rows], PAD_ID, device)[0]  # (2B, L)

    def passes():
        for half in (tokens[: args.batch_size], tokens[args.batch_size :]):
            with autocast(device, args.precision):
                hidden = model.hidden_states(half)  # (B, L, D)
            torch.log_softmax(model.lm_head(hidden[:, tiling.context - 1 :].float()).double(), -1)

    for _ in range(3):
        seconds(passes, device)
    times = [seconds(passes, device) for _ in range(args.repeats)]
    bases = args.batch_size * tiling.stride
    return {"tiling": f"{tiling.context}:{tiling.stride}", "mbp_per_s": bases / statistics.median(times) / 1e6}


def end_to_end(args, fasta: Path, out: Path) -> dict:
    opts = score_genome.ScoreGenomeOptions(
        fasta=str(fasta),
        output=str(out),
        model=args.model,
        context=args.context,
        stride=args.stride,
        batch_size=args.batch_size,
        precision=args.precision,
        writers=args.writers,
        zoom_levels=args.zoom_levels,
        force=True,
    )
    started = time.perf_counter()
    summary = score_genome.run(opts)
    wall = time.perf_counter() - started
    files = sorted(p for p in out.rglob("*") if p.is_file())
    sizes = {str(p.relative_to(out)): p.stat().st_size for p in files}
    store_bytes = sum(sizes.values())
    mbp = summary.bases / 1e6
    return {
        "bases": summary.bases,
        "seconds": wall,
        "mbp_per_s": mbp / wall,
        "store_bytes_per_mbp": store_bytes / mbp,
        # The segments, kept until the end: a token id + 2 strands x (4 llr + log P(ref)) float32 per base.
        "segment_bytes_per_mbp": (1 + 2 * 5 * 4) * 1e6,
        "sizes": sizes,
    }


def lookup(args, fasta: Path, store: Path, directory: Path) -> dict:
    """variants/s of score-variants --precomputed on one thread, over SNVs spread over the genome."""
    vcf_path = directory / "lookup.vcf.gz"
    with FastaSource(str(fasta)) as source:
        lengths = source.contig_lengths()
        contig, length = max(lengths.items(), key=lambda item: item[1])
        rng = np.random.default_rng(2)
        positions = np.sort(rng.choice(length - 2, size=args.lookup_snvs, replace=False)) + 1
        header = pysam.VariantHeader()
        for name, size in lengths.items():
            header.contigs.add(name, length=size)
        with pysam.VariantFile(str(vcf_path), "wz", header=header) as handle:
            for start in range(0, len(positions), 1 << 16):
                chunk = positions[start : start + (1 << 16)]
                text = source.fetch(contig, int(chunk[0]), int(chunk[-1]) + 1).upper()
                for pos in chunk:
                    ref = text[pos - chunk[0]]
                    if ref in "ACGT":
                        alt = "ACGT"[("ACGT".index(ref) + 1 + pos % 3) % 4]
                        handle.write(
                            handle.new_record(contig=contig, start=int(pos), stop=int(pos) + 1, alleles=(ref, alt))
                        )
    opts = score_variants.ScoreVariantsOptions(
        input=str(vcf_path),
        fasta=str(fasta),
        output=str(directory / "looked.vcf.gz"),
        precomputed=str(store),
        calibration=str(store),
        threads=1,
        device="cpu",
    )
    summary = score_variants.run(opts)
    return {"records": summary.records, "seconds": summary.seconds, "variants_per_s": summary.variants_per_second}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", type=Path, default=DEFAULT_FASTA)
    parser.add_argument("--model", default=None)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--context", type=int, default=None)
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--writers", type=int, default=None)
    parser.add_argument("--zoom-levels", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--lookup-snvs", type=int, default=500_000)
    parser.add_argument(
        "--e2e-repeats", type=int, default=1, help="model-only + end-to-end pairs (the median ratio is reported)"
    )
    parser.add_argument("--out", type=Path, default=None, help="where the results JSON goes (default: print only)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        fasta = plain_fasta(args.fasta, work)
        pairs = []
        for _ in range(args.e2e_repeats):  # the host is noisy: each end-to-end run beside its own model-only figure
            model = model_only(args, fasta, device)
            print(f"model-only: {model}", flush=True)
            gc.collect()  # its model and CUDA graphs (a reference cycle) go before score-genome forks its writers
            torch.cuda.empty_cache()
            e2e = end_to_end(args, fasta, work / "store")
            print(f"end to end: {e2e['mbp_per_s']:.3f} Mbp/s in {e2e['seconds']:.1f} s", flush=True)
            pairs.append((e2e["mbp_per_s"] / model["mbp_per_s"], model, e2e))
        looked = lookup(args, fasta, work / "store", work)
    ratios = sorted(ratio for ratio, _, _ in pairs)
    _, model, e2e = sorted(pairs, key=lambda pair: pair[0])[(len(pairs) - 1) // 2]  # the median pair (lower of two)
    report(args, device, model, e2e, looked, ratios)


def report(args, device, model: dict, e2e: dict, looked: dict, ratios: list[float]) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    ratio = e2e["mbp_per_s"] / model["mbp_per_s"]
    genome_minutes = 3.1e9 / (e2e["mbp_per_s"] * 1e6) / 60
    result = {
        "device": name,
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "precision": args.precision,
        "batch_size": args.batch_size,
        "tiling": model["tiling"],
        "model_only_mbp_per_s": model["mbp_per_s"],
        "end_to_end_mbp_per_s": e2e["mbp_per_s"],
        "ratio": ratio,
        "ratios_of_all_runs": ratios,
        "genome_3_1_gbp_minutes": genome_minutes,
        "end_to_end": e2e,
        "lookup": looked,
    }
    print(json.dumps(result, indent=2))
    print(
        f"\n| device | precision | tiling | model-only Mbp/s | end-to-end Mbp/s | ratio | 3.1 Gbp (min) | "
        f"store bytes/Mbp | lookup variants/s |\n|---|---|---|---|---|---|---|---|---|\n"
        f"| {name} | {args.precision} | {model['tiling']} | {model['mbp_per_s']:.2f} | {e2e['mbp_per_s']:.2f} | "
        f"{ratio:.0%} | {genome_minutes:.1f} | {e2e['store_bytes_per_mbp'] / 1e6:.1f} MB | "
        f"{looked['variants_per_s']:,.0f} |"
    )
    if len(ratios) > 1:
        print(f"end-to-end / model-only over {len(ratios)} runs: " + ", ".join(f"{r:.0%}" for r in ratios))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "genome_throughput.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
