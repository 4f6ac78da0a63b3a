"""Gather score-genome stores computed for disjoint contigs (a workflow's shards) into one store.

The tracks are rewritten contig by contig in the genome's order through the same writer (values cut at
the same positions), the lookup arrays copied (renumbered), the calibration counts summed: the result is
byte-identical to one unsharded run's tracks, arrays and calibration (tested through the Snakemake example).
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from genomelm.errors import InputError, UsageError
from genomelm.formats import genome_store as store
from genomelm.formats.lookup_store import LOOKUP_DIR, lookup_file
from genomelm.formats.tracks import BigWigWriter, TrackReader
from genomelm.variants.genome_tracks import compression_threads

READ_BASES = 1 << 20  # values read and written at a time (bounded memory whatever the contig length)


def gather_stores(shards: list[str], outdir: str, lengths: dict[str, int]) -> dict:
    """Write OUTDIR from the shard stores; returns the manifest. ``lengths``: the FASTA's contigs."""
    manifests = [store.read_manifest(shard) for shard in shards]
    owners = _owners(shards, manifests, lengths)
    contigs = [(name, length) for name, length in lengths.items() if name in owners]
    work = store.partial_dir(outdir)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    zoom_levels = int(manifests[0]["settings"].get("zoom_levels", 0))
    for track in store.TRACKS:
        _gather_track(track, contigs, owners, work, zoom_levels)
    _gather_lookup(contigs, owners, dict(zip(shards, manifests)), work)
    counts = sum(store.load_arrays(os.path.join(s, store.CALIBRATION), "calibration table")["counts"] for s in shards)
    calibration = store.load_arrays(os.path.join(shards[0], store.CALIBRATION), "calibration table")
    store.save_arrays(os.path.join(work, store.CALIBRATION), {**calibration, "counts": counts}, compress=True)
    manifest = _manifest(manifests, contigs, shards)
    store.write_json(os.path.join(work, store.MANIFEST), manifest)
    if os.path.exists(outdir):
        shutil.rmtree(outdir)
    os.rename(work, outdir)
    return manifest


def _owners(shards: list[str], manifests: list[dict], lengths: dict[str, int]) -> dict[str, str]:
    """Contig -> the shard that scored it whole; UsageError for shards that do not fit together."""
    first = manifests[0]
    owners: dict[str, str] = {}
    for shard, manifest in zip(shards, manifests):
        for part in ("model", "genome"):
            if manifest[part] | {"track_contigs": None, "fasta": None} != first[part] | {
                "track_contigs": None,
                "fasta": None,
            }:
                raise UsageError(f"{shard}: its {part} differs from {shards[0]}'s: not shards of one run")
        if {k: v for k, v in manifest["settings"].items() if k != "regions"} != {
            k: v for k, v in first["settings"].items() if k != "regions"
        }:
            raise UsageError(f"{shard}: its settings differ from {shards[0]}'s: not shards of one run")
        for name, length in manifest["genome"]["track_contigs"]:
            spans = (manifest["settings"].get("regions") or {}).get(name)
            if spans not in (None, [[0, length]]):
                raise UsageError(f"{shard}: contig {name} only partly scored: shards must hold whole contigs")
            if name in owners:
                raise UsageError(f"contig {name} is in both {owners[name]} and {shard}")
            owners[name] = shard
    if {n: length for n, length in first["genome"]["contigs"]} != lengths:
        raise InputError("the FASTA is not the genome the shards were scored on (contig names or lengths)")
    return owners


def _gather_track(track: str, contigs, owners: dict[str, str], work: str, zoom_levels: int) -> None:
    readers: dict[str, TrackReader] = {}
    try:
        threads = compression_threads(1)
        with BigWigWriter(store.track_file(work, track), contigs, zoom_levels, threads) as writer:
            for name, length in contigs:
                shard = owners[name]
                if shard not in readers:
                    readers[shard] = TrackReader(store.track_file(shard, track))
                for start in range(0, length, READ_BASES):
                    values = readers[shard].values(name, start, min(start + READ_BASES, length))
                    writer.add(name, start, np.asarray(values))
    finally:
        for reader in readers.values():
            reader.close()


def _gather_lookup(contigs, owners: dict[str, str], manifests: dict[str, dict], work: str) -> None:
    """Copy each contig's lookup array, renumbered by its index among the gathered contigs."""
    os.makedirs(os.path.join(work, LOOKUP_DIR))
    for index, (name, _) in enumerate(contigs):
        shard = owners[name]
        names = [n for n, _ in manifests[shard]["genome"]["track_contigs"]]
        shutil.copyfile(lookup_file(shard, names.index(name)), lookup_file(work, index))


def _manifest(manifests: list[dict], contigs, shards: list[str]) -> dict:
    manifest = {**manifests[0]}
    manifest["settings"] = {**manifest["settings"], "regions": None}
    manifest["genome"] = {**manifest["genome"], "track_contigs": [[n, length] for n, length in contigs]}
    manifest["provenance"] = {**manifest["provenance"], "gathered_from": [os.path.abspath(s) for s in shards]}
    return manifest
