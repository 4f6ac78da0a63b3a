#!/usr/bin/env python3
"""Write a small synthetic VCF of random variants against a FASTA (example and test data).

    make_vcf.py REF.fa OUT.vcf.gz [--variants 60] [--seed 0]

Sorted by contig (FASTA order) and position; REF alleles are taken from the FASTA. Mixes SNVs,
multi-allelic sites (split into one record per ALT, as `bcftools norm -m-` writes them), MNVs,
deletions and insertions. OUT ending in .gz is bgzipped and tabix-indexed; anything else is plain text.
"""

from __future__ import annotations

import argparse
import os
import random

from genomelm.formats.fasta import FastaSource

BASES = "ACGT"
KINDS = ("snv",) * 7 + ("split", "mnv", "del", "ins")


def variant(rng: random.Random, ref_at, pos: int) -> list[tuple[str, str]]:
    """(REF, ALT) pairs for one site at 1-based ``pos``; ``ref_at(pos, n)`` gives n reference bases."""
    kind = rng.choice(KINDS)
    base = ref_at(pos, 1)
    other = [b for b in BASES if b != base]
    if kind == "split":
        return [(base, alt) for alt in sorted(rng.sample(other, 2))]
    if kind == "mnv":
        ref = ref_at(pos, 2)
        return [(ref, "".join(rng.choice([b for b in BASES if b != r]) for r in ref))]
    if kind == "del":
        return [(ref_at(pos, rng.randint(2, 5)), base)]
    if kind == "ins":
        return [(base, base + "".join(rng.choice(BASES) for _ in range(rng.randint(1, 4))))]
    return [(base, rng.choice(other))]


def make_records(fasta: str, n_variants: int, seed: int) -> tuple[dict[str, int], list[str]]:
    """Contig lengths and the VCF record lines (sorted, 1-based POS)."""
    rng = random.Random(seed)
    with FastaSource(fasta) as source:
        lengths = source.contig_lengths()
        sequences = {name: source.fetch(name, 0, length).upper() for name, length in lengths.items()}
    total = sum(lengths.values())
    lines = []
    for name, length in lengths.items():
        count = max(1, round(n_variants * length / total))
        for pos in sorted(rng.sample(range(1, length - 6), min(count, length - 7))):

            def ref_at(p: int, n: int, seq: str = sequences[name]) -> str:
                return seq[p - 1 : p - 1 + n]

            if "N" in ref_at(pos, 5):
                continue
            for ref, alt in variant(rng, ref_at, pos):
                lines.append(f"{name}\t{pos}\tv{len(lines) + 1}\t{ref}\t{alt}\t.\tPASS\t.\n")
    return lengths, lines


def header(lengths: dict[str, int], fasta: str) -> str:
    contigs = "".join(f"##contig=<ID={name},length={length}>\n" for name, length in lengths.items())
    return (
        "##fileformat=VCFv4.2\n"
        f"##source=make_vcf.py (synthetic variants against {os.path.basename(fasta)})\n"
        f"{contigs}#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    )


def write(path: str, text: str) -> None:
    """Plain text, or BGZF + tabix index when ``path`` ends in .gz."""
    if not path.endswith(".gz"):
        with open(path, "w") as handle:
            handle.write(text)
        return
    import pysam

    with open(path[:-3], "w") as handle:
        handle.write(text)
    pysam.tabix_index(path[:-3], preset="vcf", force=True)  # bgzips to ``path``, removes the plain file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fasta")
    parser.add_argument("output", help="OUT.vcf or OUT.vcf.gz (bgzipped + indexed)")
    parser.add_argument("--variants", type=int, default=60, help="about this many sites (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lengths, lines = make_records(args.fasta, args.variants, args.seed)
    write(args.output, header(lengths, args.fasta) + "".join(lines))


if __name__ == "__main__":
    main()
