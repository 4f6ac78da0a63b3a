#!/usr/bin/env python3
"""Scatter a sorted VCF into region shards, and gather scored shards back (Snakemake example helper).

    vcf_shards.py bgzip IN.vcf[.gz] OUT.vcf.gz
    vcf_shards.py plan IN.vcf[.gz] SHARD_1.bed ... SHARD_N.bed
    vcf_shards.py gather --input IN.vcf[.gz] --beds SHARD_1.bed ... -o OUT.vcf.gz SCORED_1.vcf.gz ...

bgzip writes a plain or gzip VCF as BGZF with a tabix index beside it (what region queries need).

plan cuts the records into N runs of consecutive records of near-equal size (never between two records
at the same position) and writes each run's extent as BED regions, 0-based half-open, one line per
contig, in file order. `genomelm score-variants --regions SHARD_i.bed` then scores exactly that run.
A run covers the record start positions [first POS - 1, last POS) of its contig: nothing is lost
between shards, and a shard's regions never overlap another's.

gather concatenates the scored shards in shard order, keeping from each shard only the records that
start inside that shard's regions (so a deletion that two region queries both return, as queries
selecting by overlap do, is written once), writes one BGZF VCF plus its index, and checks the result
against the input: the same records (CHROM, POS, REF, ALT) in the same order, else it fails and
writes nothing. Headers come from the first shard.

Streams text (constant memory); needs only pysam (a genomelm dependency) for BGZF and the index.
Exit status: 0 ok, 1 bad input (unsorted VCF, shard mismatch), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
from collections.abc import Iterator
from itertools import zip_longest

TBI_MAX_POS = (1 << 29) - 1  # positions beyond this need a CSI index (the TBI binning scheme stops there)

Region = tuple[str, int, int]  # contig, 0-based start, end (half-open)


class ShardError(Exception):
    """Bad input: the message is printed as one line and the script exits 1."""


# --------------------------------------------------------------------------- reading


def open_text(path: str):
    """A text handle on a plain, gzip or BGZF file (BGZF is valid gzip)."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", newline="") if gzipped else open(path, newline="")


def header_and_body(path: str) -> tuple[list[str], Iterator[str]]:
    """The header lines ('#...') and an iterator over the record lines, newlines kept."""
    handle = open_text(path)
    header = []
    for line in handle:
        if not line.startswith("#"):
            return header, _chain_first(line, handle)
        header.append(line)
    handle.close()
    return header, iter(())


def _chain_first(first: str, handle) -> Iterator[str]:
    with handle:
        yield first
        yield from handle


def record_key(line: str) -> tuple[str, int, str, str]:
    """(CHROM, POS, REF, ALT) of a VCF record line; POS is 1-based as in the file."""
    fields = line.split("\t", 5)
    if len(fields) < 5:
        raise ShardError(f"not a VCF record line: {line[:80]!r}")
    return fields[0], int(fields[1]), fields[3], fields[4]


def records(path: str) -> Iterator[str]:
    return header_and_body(path)[1]


# --------------------------------------------------------------------------- plan


def plan(vcf: str, n_shards: int) -> list[list[Region]]:
    """BED regions (0-based half-open) of ``n_shards`` runs of consecutive records of ``vcf``.

    Trailing shards are empty when there are fewer distinct positions than shards.
    """
    total = sum(1 for _ in records(vcf))
    target = max(1, -(-total // n_shards))  # ceil: the last shard takes the remainder
    shards: list[list[Region]] = [[] for _ in range(n_shards)]
    shard, in_shard, previous, finished = 0, 0, None, set()
    for line in records(vcf):
        chrom, pos = record_key(line)[:2]
        _check_sorted(previous, chrom, pos, finished)
        if in_shard >= target and (chrom, pos) != previous and shard < n_shards - 1:
            shard, in_shard = shard + 1, 0
        _extend(shards[shard], chrom, pos)
        in_shard += 1
        previous = (chrom, pos)
    return shards


def _check_sorted(previous: tuple[str, int] | None, chrom: str, pos: int, finished: set[str]) -> None:
    """Region shards can only restore the file order of a VCF sorted by position within contiguous contigs."""
    if previous is None:
        return
    if chrom != previous[0]:
        finished.add(previous[0])
        if chrom in finished:
            raise ShardError(f"VCF is not sorted: contig {chrom} appears again after other contigs (bcftools sort)")
    elif pos < previous[1]:
        raise ShardError(f"VCF is not sorted: {chrom}:{pos} comes after {chrom}:{previous[1]} (bcftools sort)")


def _extend(regions: list[Region], chrom: str, pos: int) -> None:
    """Grow the shard's region on ``chrom`` to cover a record starting at 1-based ``pos``."""
    if regions and regions[-1][0] == chrom:
        regions[-1] = (chrom, regions[-1][1], pos)
    else:
        regions.append((chrom, pos - 1, pos))


def write_bed(path: str, regions: list[Region]) -> None:
    with open(path, "w") as handle:
        handle.writelines(f"{chrom}\t{start}\t{end}\n" for chrom, start, end in regions)


def read_bed(path: str) -> dict[str, list[tuple[int, int]]]:
    """Contig -> [(start, end)], 0-based half-open, from a BED file."""
    regions: dict[str, list[tuple[int, int]]] = {}
    with open(path) as handle:
        for line in handle:
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) >= 3 and not line.startswith(("#", "track", "browser")):
                regions.setdefault(fields[0], []).append((int(fields[1]), int(fields[2])))
    return regions


# --------------------------------------------------------------------------- gather


def owned_lines(shard: str, bed: str) -> Iterator[str]:
    """The record lines of a scored shard whose start lies inside the shard's own regions."""
    regions = read_bed(bed)
    if not regions:
        return  # an empty shard (fewer positions than shards) owns nothing; its file is not read
    for line in records(shard):
        chrom, pos = record_key(line)[:2]
        if any(start <= pos - 1 < end for start, end in regions.get(chrom, ())):
            yield line


def gathered_lines(shards: list[str], beds: list[str]) -> Iterator[str]:
    for shard, bed in zip(shards, beds):
        yield from owned_lines(shard, bed)


def checked(lines: Iterator[str], original: str) -> Iterator[str]:
    """Pass ``lines`` through while checking them, in lockstep, against the records of ``original``."""
    for number, (line, source) in enumerate(zip_longest(lines, records(original)), 1):
        if line is None or source is None:
            what = "missing from the shards" if line is None else "not in the input"
            raise ShardError(f"gathered VCF differs from the input at record {number}: a record is {what}")
        if record_key(line) != record_key(source):
            raise ShardError(
                f"gathered VCF differs from the input at record {number}: {record_key(line)} vs {record_key(source)}"
            )
        yield line


def gather(original: str, beds: list[str], shards: list[str], output: str) -> int:
    """Write the shards' records as one BGZF VCF + index (atomically); returns the record count."""
    if len(beds) != len(shards):
        raise ShardError(f"{len(shards)} scored shards but {len(beds)} BED files")
    header = _first_header(shards, beds)
    return write_indexed(output, header, checked(gathered_lines(shards, beds), original))


def write_indexed(output: str, header: list[str], lines: Iterator[str]) -> int:
    """BGZF VCF + tabix index (CSI past 2^29 bp), both renamed into place on success; returns the record count."""
    import pysam

    # The temporary name keeps the .gz suffix: tabix_index would otherwise compress the file a second time.
    partial = os.path.join(os.path.dirname(os.path.abspath(output)), f".{os.path.basename(output)}.partial.gz")
    try:
        count, max_pos = _write_bgzf(partial, header, lines)
        suffix = ".csi" if max_pos > TBI_MAX_POS else ".tbi"
        pysam.tabix_index(partial, preset="vcf", force=True, index=partial + suffix, csi=suffix == ".csi")
        os.replace(partial + suffix, output + suffix)
        os.replace(partial, output)  # last: a complete VCF never sits beside a stale index
    finally:
        for leftover in (partial, partial + ".tbi", partial + ".csi"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return count


def _first_header(shards: list[str], beds: list[str]) -> list[str]:
    """The header of the first non-empty shard (all shards come from the same command and input)."""
    for shard, bed in zip(shards, beds):
        if read_bed(bed):
            return header_and_body(shard)[0]
    return header_and_body(shards[0])[0] if shards else []


def _write_bgzf(path: str, header: list[str], lines: Iterator[str]) -> tuple[int, int]:
    import pysam

    count = max_pos = 0
    with pysam.BGZFile(path, "wb") as out:
        out.write("".join(header).encode())
        for line in lines:
            out.write(line.encode())
            count += 1
            max_pos = max(max_pos, record_key(line)[1])
    return count, max_pos


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.step == "bgzip":
            header, body = header_and_body(args.vcf)
            write_indexed(args.output, header, body)
        elif args.step == "plan":
            for path, regions in zip(args.beds, plan(args.vcf, len(args.beds))):
                write_bed(path, regions)
        else:
            count = gather(args.input, args.beds, args.shards, args.output)
            print(f"vcf_shards: gathered {count} records from {len(args.shards)} shards", file=sys.stderr)
    except (ShardError, OSError, ValueError) as exc:
        print(f"vcf_shards: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    compressor = steps.add_parser("bgzip", help="write a VCF as BGZF with a tabix index")
    compressor.add_argument("vcf")
    compressor.add_argument("output", help="output .vcf.gz (index written beside it)")
    planner = steps.add_parser("plan", help="write one BED of regions per shard")
    planner.add_argument("vcf")
    planner.add_argument("beds", nargs="+", help="output BED files, one per shard")
    gatherer = steps.add_parser("gather", help="concatenate scored shards into one indexed VCF")
    gatherer.add_argument("--input", required=True, help="the VCF that was scattered")
    gatherer.add_argument("--beds", nargs="+", required=True, help="the shards' BED files, in shard order")
    gatherer.add_argument("-o", "--output", required=True, help="output .vcf.gz (index written beside it)")
    gatherer.add_argument("shards", nargs="+", help="scored shard VCFs, in shard order")
    return parser


if __name__ == "__main__":
    sys.exit(main())
