"""`genomelm score-genome`: values equal score-variants', tracks, manifest, calibration, resume, bad input."""

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyBigWig
import pysam
import pytest
import torch
from typer.testing import CliRunner

import genomelm
from genomelm.cli import app
from genomelm.commands import score_genome as sg
from genomelm.commands import score_variants as sv
from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats import genome_store as store
from genomelm.formats import tracks
from genomelm.formats.checkpoint import load_model, save_model
from genomelm.formats.lookup_store import alt_column, lookup_file
from genomelm.variants.calibration import CONTEXTS, CalibrationTable
from genomelm.variants.fast_lookup import lookup_lines
from tests.conftest import random_dna, tiny_model, torchrun, write_fasta

runner = CliRunner()
CONTEXT, STRIDE = 40, 24  # small blocks: a few kb of genome have many of them


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _genome() -> dict[str, str]:
    chr1 = random_dna(1500, seed=1)
    chr1 = chr1[:500] + chr1[500:600].lower() + "N" * 30 + chr1[630:]  # soft-masked stretch, an N run
    return {"chr1": chr1, "chr2": random_dna(300, seed=2), "chrT": "A", "chrE": "CG"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("genome")
    fasta = write_fasta(root / "ref.fa", _genome())
    model = save_model(tiny_model(), root / "tiny")
    whole = root / "whole"
    summary = sg.run(options(fasta, whole, model, writers=2))
    return {"root": root, "fasta": fasta, "model": model, "store": whole, "summary": summary}


def options(fasta, output, model, **changes):
    values = dict(
        fasta=str(fasta), output=str(output), model=str(model), context=CONTEXT, stride=STRIDE, batch_size=3, writers=2
    )
    values.update(changes)
    return sg.ScoreGenomeOptions(**values)


def track_values(store_dir, track, contig, length) -> np.ndarray:
    with tracks.TrackReader(store.track_file(str(store_dir), track)) as reader:
        return reader.values(contig, 0, length)


def lookup_array(store_dir, contig) -> np.ndarray:
    """The lookup rows of every position of ``contig`` (NaN where the store's file covers none); its index
    among the store's track contigs names the file."""
    genome = store.read_manifest(str(store_dir))["genome"]
    names = [name for name, _ in genome["track_contigs"]]
    length = dict(genome["track_contigs"])[contig]
    spans = genome.get("lookup_spans", {}).get(contig, [[0, length]])
    rows = np.load(lookup_file(str(store_dir), names.index(contig)))
    full = np.full((length, rows.shape[1]), np.nan, dtype=rows.dtype)
    offset = 0
    for start, end in spans:
        full[start:end] = rows[offset : offset + end - start]
        offset += end - start
    assert offset == len(rows)
    return full


def all_snvs_vcf(path: Path, genome: dict[str, str], contigs=("chr1", "chr2", "chrT", "chrE")) -> Path:
    """Every possible SNV of the given contigs (3 per A/C/G/T base), as score-variants input."""
    header = pysam.VariantHeader()
    for name in genome:
        header.contigs.add(name, length=len(genome[name]))
    with pysam.VariantFile(str(path), "w", header=header) as handle:
        for name in contigs:
            for pos, base in enumerate(genome[name].upper()):
                if base in "ACGT":
                    alts = tuple(b for b in "ACGT" if b != base)
                    handle.write(handle.new_record(contig=name, start=pos, stop=pos + 1, alleles=(base, *alts)))
    return path


def scored_by_score_variants(data, vcf_path: Path, **changes) -> list:
    out = vcf_path.with_suffix(".scored.vcf")
    values = dict(
        input=str(vcf_path),
        fasta=str(data["fasta"]),
        output=str(out),
        model=str(data["model"]),
        context=CONTEXT,
        stride=STRIDE,
        batch_size=3,
    )
    values.update(changes)
    sv.run(sv.ScoreVariantsOptions(**values))
    with pysam.VariantFile(str(out)) as handle:
        return [(r.chrom, r.start, r.ref, r.alts, dict(r.info)) for r in handle]


# --------------------------------------------------------------------------- values


def test_every_value_equals_score_variants_llr(data, tmp_path):
    genome = _genome()
    records = scored_by_score_variants(data, all_snvs_vcf(tmp_path / "all.vcf", genome))
    lengths = {name: len(seq) for name, seq in genome.items()}
    mean = {(c, b): track_values(data["store"], f"llr_{b}", c, lengths[c]) for c in genome for b in "ACGT"}
    arrays = {c: lookup_array(data["store"], c) for c in genome}
    seen = {"values": 0, "none": 0}
    for contig, pos, ref, alts, info in records:
        for a, alt in enumerate(alts):
            got = mean[(contig, alt)][pos]
            column = int(alt_column(np.int64("ACGT".index(ref)), np.int64("ACGT".index(alt))))
            row = arrays[contig][pos]  # the lookup array holds the track's float32 value, bit for bit
            assert row[column].tobytes() == np.float32(got).tobytes() or np.isnan(got) and np.isnan(row[column])
            forward = row[3 + column]
            if "GLM_LLR" not in info:  # n_in_context or no_context: no value in the tracks either
                assert np.isnan(got), (contig, pos, info.get("GLM_SKIP"))
                seen["none"] += 1
                continue
            np.testing.assert_allclose(got, info["GLM_LLR"][a], rtol=2e-6, atol=2e-6)
            if info.get("GLM_LLR_FWD", [None] * len(alts))[a] is None:
                assert np.isnan(forward) and pos == 0
            else:
                np.testing.assert_allclose(forward, info["GLM_LLR_FWD"][a], rtol=2e-6, atol=2e-6)
            seen["values"] += 1
        assert mean[(contig, ref)][pos] in (0.0,) or np.isnan(mean[(contig, ref)][pos])  # llr of REF -> REF
    assert seen["values"] > 4000 and seen["none"] > 100  # the N run's blocks and the 1-base contig have none


def test_positions_without_values(data):
    genome = _genome()
    llr_a = track_values(data["store"], "llr_A", "chr1", 1500)
    assert np.isnan(llr_a[600:630]).all()  # the N run
    stride_blocks_near_n = [k for k in range(1500 // STRIDE) if np.isnan(llr_a[k * STRIDE : (k + 1) * STRIDE]).all()]
    assert stride_blocks_near_n, "blocks whose context is N-heavy have no value at all"
    assert np.isnan(track_values(data["store"], "llr_A", "chrT", 1)).all()  # no context on either strand
    assert np.isfinite(track_values(data["store"], "llr_A", "chrE", 2)).all()  # one strand each: values
    assert genome["chrE"] == "CG"


def test_min_and_surprise_tracks(data):
    means = np.stack([track_values(data["store"], f"llr_{b}", "chr2", 300) for b in "ACGT"])  # (4, L)
    ref = np.array(["ACGT".index(b) for b in _genome()["chr2"]])
    alternatives = np.where(np.arange(4)[:, None] == ref[None, :], np.inf, means)
    np.testing.assert_allclose(track_values(data["store"], "llr_min", "chr2", 300), alternatives.min(0), rtol=1e-6)
    assert (means[ref, np.arange(300)] == 0).all()
    surprise = track_values(data["store"], "surprise", "chr2", 300)
    assert np.isfinite(surprise).all() and (surprise > 0).all()
    # -log2 P(ref) and llr agree: P(alt) = P(ref) * 2^(llr / ln 2) sums with P(ref) to at most 1 per strand
    p_ref = 2.0**-surprise
    assert (p_ref * np.exp(means).sum(0) <= 1.0 + 1e-3).all()


def test_tracks_are_bigwig_with_the_genome_header_and_a_manifest(data):
    manifest = json.loads((data["store"] / store.MANIFEST).read_text())
    assert manifest["genome"]["contigs"] == [[n, len(s)] for n, s in _genome().items()]
    assert manifest["settings"]["context"] == CONTEXT and manifest["settings"]["stride"] == STRIDE
    assert manifest["model"]["sha256"] == hashlib.sha256((data["model"] / "model.safetensors").read_bytes()).hexdigest()
    assert set(manifest["tracks"]) == set(store.TRACKS)
    for track in store.TRACKS:
        handle = pyBigWig.open(str(store.track_file(str(data["store"]), track)))
        assert handle.isBigWig() and handle.chroms() == {n: len(s) for n, s in _genome().items()}
        handle.close()
    assert sorted(os.listdir(data["store"])) == sorted(
        [store.MANIFEST, store.CALIBRATION, "lookup"] + [f"{t}.bw" for t in store.TRACKS]
    )
    assert sorted(os.listdir(data["store"] / "lookup")) == [f"{i:07d}.npy" for i in range(len(_genome()))]
    assert not os.path.exists(store.partial_dir(str(data["store"])))


def test_calibration_counts_every_snv_and_ranks_like_the_tracks(data):
    arrays = store.load_arrays(str(data["store"] / store.CALIBRATION))
    table = CalibrationTable(arrays["counts"])
    values = []
    for contig, seq in _genome().items():
        means = np.stack([track_values(data["store"], f"llr_{b}", contig, len(seq)) for b in "ACGT"], 1)
        for pos, base in enumerate(seq.upper()):
            if base in "ACGT":
                values += [v for b, v in zip("ACGT", means[pos]) if b != base and np.isfinite(v)]
    values = np.sort(np.array(values))
    assert table.totals[-1] == len(values) and table.totals[:-1].sum() < len(values)  # contig ends: no context
    for q in (0.01, 0.25, 0.5, 0.9):
        x = values[int(q * len(values))]
        exact = np.mean(values < x)
        assert abs(float(table.rank_fraction(np.array([x]))[0]) - exact) <= np.mean(np.abs(values - x) < 0.01) + 1e-9
    assert table.phred(np.array([0.1]))[0] == pytest.approx(10.0) and table.phred(np.array([0.001]))[0] > 29.9
    assert len(CONTEXTS) == 64 and CONTEXTS[0] == "AAA"


# --------------------------------------------------------------------------- resumable


def _files(directory: Path) -> dict[str, bytes]:
    """Every file of a store (the lookup arrays included) but the manifest, by relative path."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != store.MANIFEST)
    return {str(p.relative_to(directory)): p.read_bytes() for p in files}


def test_time_limit_stops_and_resume_gives_byte_identical_files(data, tmp_path):
    out, whole = tmp_path / "resumed", tmp_path / "whole"
    sg.run(options(data["fasta"], whole, data["model"], batch_size=16))
    first = sg.run(options(data["fasta"], out, data["model"], time_limit=1e-9, batch_size=16))
    assert not first.complete and first.stopped == "time-limit" and not out.exists()
    assert os.listdir(Path(store.partial_dir(str(out))) / store.SEGMENTS)  # work kept for --resume
    journal = json.loads((Path(store.partial_dir(str(out))) / store.JOURNAL).read_text())
    assert journal["stopped"]["reason"] == "time-limit" and journal["stopped"]["segments_saved"] >= 1
    rounds = 1
    while not out.exists():
        rounds += 1
        sg.run(options(data["fasta"], out, data["model"], time_limit=1e-9, resume=True, batch_size=16))
    assert rounds > 3  # several stops, each after one batch of blocks
    assert _files(out) == _files(whole)
    with pytest.raises(UsageError, match="exists"):
        sg.run(options(data["fasta"], out, data["model"]))
    assert sg.run(options(data["fasta"], out, data["model"], resume=True)).complete  # nothing left to do


def test_resume_refuses_other_settings(data, tmp_path):
    out = tmp_path / "o"
    sg.run(options(data["fasta"], out, data["model"], time_limit=1e-9))
    with pytest.raises(UsageError, match="settings differs"):
        sg.run(options(data["fasta"], out, data["model"], resume=True, max_n_frac=0.2))
    with pytest.raises(UsageError, match="unfinished run"):
        sg.run(options(data["fasta"], out, data["model"]))
    assert sg.run(options(data["fasta"], out, data["model"], force=True)).complete


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_at_a_block_boundary_and_resume_completes(data, tmp_path, signum, code):
    fasta = write_fasta(tmp_path / "big.fa", {"c": random_dna(30_000, seed=4)})
    out = tmp_path / "o"
    command = [sys.executable, "-m", "genomelm", "score-genome", str(fasta), "-o", str(out), "--model"]
    command += [str(data["model"]), "--context", "40", "--stride", "24", "-b", "2", "--threads", "1", "--writers", "1"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    tracks_dir = Path(store.partial_dir(str(out))) / store.TRACK_DIR
    deadline = time.monotonic() + 60
    while not tracks_dir.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert "--resume" in stderr and not out.exists()
    done = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    whole = tmp_path / "whole"
    sg.run(options(fasta, whole, data["model"], batch_size=2, writers=1))
    assert _files(out) == _files(whole)


# --------------------------------------------------------------------------- bad input


def test_regions_limit_the_values(data, tmp_path):
    out = tmp_path / "r"
    summary = sg.run(options(data["fasta"], out, data["model"], regions=["chr1:101-200", "chr2"]))
    assert summary.bases == 100 + 300
    llr = track_values(out, "llr_C", "chr1", 1500)
    assert np.isnan(llr[:100]).all() and np.isnan(llr[200:]).all() and np.isfinite(llr[100:200]).all()
    np.testing.assert_array_equal(llr[100:200], track_values(data["store"], "llr_C", "chr1", 1500)[100:200])
    with tracks.TrackReader(store.track_file(str(out), "llr_C")) as reader:
        assert set(reader.contigs) == {"chr1", "chr2"}
    with pytest.raises(InputError, match="did you mean 'chr1'"):
        sg.run(options(data["fasta"], tmp_path / "x", data["model"], regions=["1:1-10"]))
    with pytest.raises(InputError, match="outside"):
        sg.run(options(data["fasta"], tmp_path / "x", data["model"], regions=["chr2:1-400"]))
    assert not (tmp_path / "x").exists() and not os.path.exists(store.partial_dir(str(tmp_path / "x")))


def test_lookup_arrays_of_regions_cover_their_spans_only(data, tmp_path):
    """Two regions of chr1 and one of chr2: the lookup files hold the segments' blocks, not whole contigs,
    and a lookup gives the whole-genome store's values inside the regions, not_in_precomputed outside."""
    out = tmp_path / "r"
    sg.run(options(data["fasta"], out, data["model"], regions=["chr1:101-200", "chr1:1201-1260", "chr2:31-60"]))
    genome = store.read_manifest(str(out))["genome"]
    spans = genome["lookup_spans"]
    blocks = [
        [(101 - 1) // STRIDE * STRIDE, -(-200 // STRIDE) * STRIDE],
        [1200 // STRIDE * STRIDE, -(-1260 // STRIDE) * STRIDE],
    ]
    assert spans == {"chr1": blocks, "chr2": [[24, 72]]}
    for index, contig in enumerate(("chr1", "chr2")):
        rows = np.load(lookup_file(str(out), index), mmap_mode="r")
        assert len(rows) == sum(end - start for start, end in spans[contig])
    whole_chr1, part_chr1 = lookup_array(data["store"], "chr1"), lookup_array(out, "chr1")
    for start, end in ((100, 200), (1200, 1260)):
        np.testing.assert_array_equal(part_chr1[start:end], whole_chr1[start:end])
    assert np.isnan(part_chr1[:96]).all() and np.isnan(part_chr1[216:1200]).all()
    vcf_path = all_snvs_vcf(tmp_path / "all.vcf", _genome(), contigs=("chr1", "chr2"))
    looked = tmp_path / "looked.vcf"
    sv.run(sv.ScoreVariantsOptions(str(vcf_path), str(data["fasta"]), str(looked), precomputed=str(out)))
    whole = tmp_path / "whole.vcf"
    sv.run(sv.ScoreVariantsOptions(str(vcf_path), str(data["fasta"]), str(whole), precomputed=str(data["store"])))
    inside = {"chr1": [(101, 200), (1201, 1260)], "chr2": [(31, 60)]}  # 1-based, closed
    for got, expected in zip(_records(looked), _records(whole), strict=True):
        contig, pos, info = got[0], got[1], got[4]
        if any(lo <= pos <= hi for lo, hi in inside[contig]):
            assert_same_annotations([got], [expected])
        else:  # skipped as in the whole store (an N in the context, say), or for lack of a value
            assert info.get("GLM_SKIP") == expected[4].get("GLM_SKIP", "not_in_precomputed"), (contig, pos, info)


def test_fasta_in_a_read_only_directory(data, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    fasta = write_fasta(folder / "g.fa", {"c": random_dna(200, seed=8)})
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert sg.run(options(fasta, tmp_path / "o", data["model"])).complete
    finally:
        folder.chmod(stat.S_IRWXU)


def test_many_short_contigs_and_the_bigwig_contig_limit(data, tmp_path, monkeypatch):
    fasta = write_fasta(tmp_path / "many.fa", {f"ctg{i}": random_dna(30, seed=i) for i in range(300)})
    summary = sg.run(options(fasta, tmp_path / "o", data["model"]))
    assert summary.complete and summary.segments == 300
    with tracks.TrackReader(store.track_file(str(tmp_path / "o"), "llr_A")) as reader:
        assert len(reader.contigs) == 300
    monkeypatch.setattr(tracks, "MAX_CONTIGS", 100)
    with pytest.raises(UsageError, match="300 contigs"):
        sg.run(options(fasta, tmp_path / "o2", data["model"]))


def test_cli_exit_codes(data, tmp_path):
    base = ["score-genome", str(data["fasta"]), "--model", str(data["model"]), "--context", "40", "--stride", "24"]
    assert runner.invoke(app, [*base, "-o", str(data["store"])]).exit_code == 2  # exists
    assert runner.invoke(app, [*base, "-o", str(tmp_path / "a"), "--resume"]).exit_code == 2  # nothing to resume
    assert runner.invoke(app, [*base, "-o", str(tmp_path / "a"), "-r", "chrZ"]).exit_code == 1
    assert runner.invoke(app, [*base, "-o", str(tmp_path / "a"), "--time-limit", "x"]).exit_code == 2
    missing = ["score-genome", str(tmp_path / "no.fa"), "-o", str(tmp_path / "b"), "--model", str(data["model"])]
    assert runner.invoke(app, missing).exit_code == 1
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "c"), "--time-limit", "0.000001s", "-b", "1"])
    assert result.exit_code == 0 and not (tmp_path / "c").exists()


def test_one_thread_equals_two_and_batch_sizes_agree(data, tmp_path):
    out = tmp_path / "b1"
    sg.run(options(data["fasta"], out, data["model"], batch_size=1, threads=2, writers=1, regions=["chr2"]))
    for track in ("llr_A", "surprise"):
        np.testing.assert_allclose(
            track_values(out, track, "chr2", 300), track_values(data["store"], track, "chr2", 300), rtol=1e-5, atol=1e-6
        )


# --------------------------------------------------------------------------- lookup (score-variants --precomputed)


def _mixed_vcf(path: Path, genome: dict[str, str]) -> Path:
    """Every SNV of chr2 and of chr1's ends and N run, plus records the store cannot hold."""
    header = pysam.VariantHeader()
    for name in genome:
        header.contigs.add(name, length=len(genome[name]))
    header.contigs.add("chrZ", length=100)
    c1 = genome["chr1"].upper()
    rows = [("chr1", p) for p in [*range(0, 30), *range(580, 650), *range(1470, 1500)]]
    rows += [("chr2", p) for p in range(300)] + [("chrT", 0), ("chrE", 0), ("chrE", 1)]
    with pysam.VariantFile(str(path), "w", header=header) as handle:
        for contig, pos in rows:
            base = genome[contig][pos].upper()
            alts = tuple(b for b in "ACGT" if b != base) if base in "ACGT" else ("A",)
            handle.write(handle.new_record(contig=contig, start=pos, stop=pos + 1, alleles=(base, *alts)))
        for contig, start, alleles in [
            ("chr1", 40, (c1[40:43], c1[40])),  # deletion: not_snv
            ("chr1", 50, ("T" if c1[50] != "T" else "A", "C")),  # REF differs from the FASTA
            ("chrZ", 5, ("A", "G")),  # contig_missing
        ]:
            handle.write(handle.new_record(contig=contig, start=start, stop=start + len(alleles[0]), alleles=alleles))
    return path


def _records(path) -> list:
    with pysam.VariantFile(str(path)) as handle:
        return [(r.chrom, r.pos, r.ref, r.alts, dict(r.info)) for r in handle]


def assert_same_annotations(got: list, expected: list) -> None:
    """Same records, same INFO keys (and SKIP values), numbers equal to float rounding."""
    assert len(got) == len(expected)
    for (*site, info), (*site_expected, info_expected) in zip(got, expected):
        assert site == site_expected and set(info) == set(info_expected), (site, info, info_expected)
        for key, value in info.items():
            if isinstance(value, str):
                assert value == info_expected[key], (site, key)
            else:
                np.testing.assert_allclose(np.array(value, float), np.array(info_expected[key], float), 1e-5, 1e-5)


def test_lookup_gives_the_same_info_as_computing(data, tmp_path):
    vcf_path = _mixed_vcf(tmp_path / "mixed.vcf", _genome())
    computed = scored_by_score_variants(data, vcf_path)
    looked = vcf_path.with_suffix(".looked.vcf")
    base = dict(input=str(vcf_path), fasta=str(data["fasta"]), output=str(looked))
    summary = sv.run(sv.ScoreVariantsOptions(**base, precomputed=str(data["store"])))
    assert summary.forward_passes == 0
    records = _records(looked)
    assert_same_annotations(records, [(c, p + 1, r, a, i) for c, p, r, a, i in computed])
    skips = {info.get("GLM_SKIP") for *_, info in records}
    assert {"not_snv", "ref_mismatch", "contig_missing", "n_in_context", "no_context"} <= skips


def test_lookup_outside_the_store_and_bad_stores(data, tmp_path):
    partial = tmp_path / "part"
    sg.run(options(data["fasta"], partial, data["model"], regions=["chr2:1-100"]))
    vcf_path = _mixed_vcf(tmp_path / "mixed.vcf", _genome())
    out = tmp_path / "o.vcf"
    base = dict(input=str(vcf_path), fasta=str(data["fasta"]), output=str(out))
    sv.run(sv.ScoreVariantsOptions(**base, precomputed=str(partial)))
    by_site = {(c, p): info for c, p, _, _, info in _records(out)}
    assert "GLM_LLR" in by_site[("chr2", 50)] and by_site[("chr2", 150)]["GLM_SKIP"] == "not_in_precomputed"
    other = write_fasta(tmp_path / "other.fa", {**_genome(), "chr2": random_dna(301, seed=2)})
    with pytest.raises(InputError, match="contig chr2 has length 301"):
        sv.run(sv.ScoreVariantsOptions(**{**base, "fasta": str(other)}, precomputed=str(data["store"])))
    other_model = save_model(tiny_model(seed=5), tmp_path / "other-model")
    with pytest.raises(UsageError, match="not the model of"):
        sv.run(sv.ScoreVariantsOptions(**base, precomputed=str(data["store"]), model=str(other_model)))
    with pytest.raises(UsageError, match="llr values only"):
        sv.run(sv.ScoreVariantsOptions(**base, precomputed=str(data["store"]), methods=["llr", "delta-ll"]))
    with pytest.raises(UsageError, match="--stride 7"):
        sv.run(sv.ScoreVariantsOptions(**base, precomputed=str(data["store"]), stride=7))
    with pytest.raises(InputError, match="not a finished score-genome store"):
        sv.run(sv.ScoreVariantsOptions(**base, precomputed=str(tmp_path)))
    assert not out.with_name("o2.vcf").exists()


def test_python_api_looks_up_and_ranks_as_the_cli(data, tmp_path):
    """genomelm.score_variants(precomputed=, calibration=): the TSV numbers of score-variants with the same stores,
    without a model; computing with the store's model and ranking gives the same values."""
    vcf_path = _mixed_vcf(tmp_path / "mixed.vcf", _genome())
    tsv = tmp_path / "t.tsv"
    stores = dict(precomputed=str(data["store"]), calibration=str(data["store"]))
    sv.run(sv.ScoreVariantsOptions(str(vcf_path), str(data["fasta"]), str(tmp_path / "o.vcf"), tsv=str(tsv), **stores))
    lines = [line.split("\t") for line in tsv.read_text().splitlines() if not line.startswith("#")]
    rows = [dict(zip(lines[0], line)) for line in lines[1:]]
    looked = list(genomelm.score_variants(vcf_path, data["fasta"], **stores))
    computed = genomelm.score_variants(
        vcf_path, data["fasta"], str(data["model"]), calibration=data["store"], context=CONTEXT, stride=STRIDE
    )
    names = ("llr", "llr_fwd", "llr_rev", "llr_pct", "llr_phred", "llr_pct_ctx", "llr_phred_ctx")
    assert len(rows) == len(looked) and sum(r["skip"] == "NA" for r in rows) > 10
    for row, result, again in zip(rows, looked, computed, strict=True):
        assert (result.chrom, str(result.pos), result.ref, result.alt) == (
            row["chrom"],
            row["pos"],
            row["ref"],
            row["alt"],
        )
        assert (result.skip or "NA") == row["skip"] and again.skip == result.skip
        for name in names:
            if row[name] == "NA":
                assert name not in result.scores and name not in again.scores
            else:
                assert result.scores[name] == pytest.approx(float(row[name]), rel=1e-5, abs=1e-6)
                assert again.scores[name] == pytest.approx(result.scores[name], rel=1e-4, abs=1e-5)
    with pytest.raises(UsageError, match="llr values only"):
        next(genomelm.score_variants(vcf_path, data["fasta"], methods=("llr", "delta-ll"), **stores))
    with pytest.raises(UsageError, match="name the model by its path"):
        next(genomelm.score_variants(vcf_path, data["fasta"], load_model(str(data["model"])), **stores))
    other = save_model(tiny_model(seed=5), tmp_path / "other-model")
    with pytest.raises(UsageError, match="not the model of"):
        next(genomelm.score_variants(vcf_path, data["fasta"], str(other), calibration=data["store"]))


def test_calibration_adds_ranks_and_phred(data, tmp_path):
    vcf_path = _mixed_vcf(tmp_path / "mixed.vcf", _genome())
    out = tmp_path / "c.vcf"
    result = runner.invoke(
        app,
        ["score-variants", str(vcf_path), "-f", str(data["fasta"]), "-o", str(out)]
        + ["--precomputed", str(data["store"]), "--calibration", str(data["store"])],
    )
    assert result.exit_code == 0, result.output
    table = CalibrationTable(store.load_arrays(str(data["store"] / store.CALIBRATION))["counts"])
    checked = 0
    for contig, pos, _, _, info in _records(out):
        if "GLM_LLR" not in info:
            assert "GLM_LLR_PCT" not in info
            continue
        pct, phred = np.array(info["GLM_LLR_PCT"], float), np.array(info["GLM_LLR_PHRED"], float)
        np.testing.assert_allclose(pct, table.rank_fraction(np.array(info["GLM_LLR"], float)), atol=1e-4)
        np.testing.assert_allclose(phred, -10 * np.log10(np.maximum(pct, 1 / table.totals[-1])), rtol=1e-5, atol=1e-4)
        seq = _genome()[contig].upper()
        known = 1 < pos < len(seq) and set(seq[pos - 2 : pos + 1]) <= set("ACGT")  # pos is 1-based
        assert ("GLM_LLR_PCT_CTX" in info) == known, (contig, pos)
        checked += 1
    assert checked > 300
    computed = tmp_path / "computed.vcf"
    sv.run(
        sv.ScoreVariantsOptions(
            str(vcf_path),
            str(data["fasta"]),
            str(computed),
            model=str(data["model"]),
            context=CONTEXT,
            stride=STRIDE,
            batch_size=3,
            calibration=str(data["store"]),
        )
    )
    assert_same_annotations(_records(computed), _records(out))
    other_model = save_model(tiny_model(seed=5), tmp_path / "other-model")
    with pytest.raises(UsageError, match="not the model of"):
        sv.run(
            sv.ScoreVariantsOptions(
                str(vcf_path), str(data["fasta"]), str(computed), model=str(other_model), calibration=str(data["store"])
            )
        )


def test_dense_passes_equal_block_log_probs(data):
    """score-genome's device-side passes for whole blocks = the engine's block_log_probs."""
    from genomelm.formats.checkpoint import load_model
    from genomelm.variants import Reference, block_log_probs, open_fasta
    from genomelm.variants.genome import GenomeScorer, dense_block_log_probs
    from genomelm.variants.llr import LlrTiling

    model, tiling, device = load_model(str(data["model"])), LlrTiling(CONTEXT, STRIDE), torch.device("cpu")
    with open_fasta(str(data["fasta"])) as fasta:
        reference = Reference(fasta)
        for contig, blocks in (("chr1", [0, 1, 7, 30, 62]), ("chrE", [0]), ("chr2", [12])):
            length = reference.length(contig)
            engine = block_log_probs(model, reference, contig, blocks, tiling, device=device, batch_size=2)
            scorer = GenomeScorer(model, reference, tiling, device, "fp32", 2, 1.0)
            for expected, (forward, reverse) in zip(engine, dense_block_log_probs(scorer, contig, blocks, length)):
                np.testing.assert_allclose(forward, expected.forward, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(reverse, expected.reverse, rtol=1e-5, atol=1e-6)
                assert (np.isnan(forward).any(1) == ~expected.has_forward).all()


def _scored_ranges(data, in_flight: int, stop_after: int | None = None, device: str = "cpu") -> list:
    from genomelm.formats.checkpoint import load_model
    from genomelm.variants import Reference, open_fasta
    from genomelm.variants.genome import GenomeScorer
    from genomelm.variants.llr import LlrTiling

    calls = []

    def stop() -> bool:
        calls.append(1)
        return stop_after is not None and len(calls) >= stop_after

    ranges = [("chr1", range(0, 20), [(100, 300)]), ("chr1", range(20, 63), None), ("chrE", range(0, 1), None)]
    with open_fasta(str(data["fasta"])) as fasta:
        model = load_model(str(data["model"])).to(device)
        scorer = GenomeScorer(model, Reference(fasta), LlrTiling(CONTEXT, STRIDE), torch.device(device), "fp32", 3,
                              0.05, in_flight=in_flight)  # fmt: skip
        return list(scorer.score_ranges(ranges, stop))


def test_queued_batches_and_stopping_keep_the_segments(data):
    """Batches queued across range boundaries give each range the arrays of one batch at a time;
    a stop finishes the queued batches and yields the range in progress up to its last block."""
    one, three = _scored_ranges(data, 1), _scored_ranges(data, 3)
    assert [(i, done) for i, done, _ in three] == [(0, 20), (1, 63), (2, 1)]
    for (_, _, expected), (_, _, arrays) in zip(one, three):
        assert expected.keys() == arrays.keys()
        for key in expected:
            np.testing.assert_array_equal(arrays[key], expected[key])
    stopped = _scored_ranges(data, 3, stop_after=9)  # 7 batches of range 0, 2 of range 1
    assert [(i, done) for i, done, _ in stopped] == [(0, 20), (1, 26)]
    assert len(stopped[1][2]["forward_llr"]) == 6 * STRIDE
    for key, array in stopped[1][2].items():  # a prefix of the whole range's (ref: with its flanks)
        np.testing.assert_array_equal(array, three[1][2][key][: len(array)])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_reused_pinned_buffers_on_the_gpu_give_the_cpu_values(data):
    """On a GPU, queued batches pass through reused page-locked buffers: each range still gets the
    values of one batch at a time, and the CPU's to float rounding."""
    cpu, one, three = (_scored_ranges(data, n, device=d) for n, d in ((1, "cpu"), (1, "cuda"), (3, "cuda")))
    for (_, _, expected), (_, _, single), (_, _, queued) in zip(cpu, one, three):
        for key in expected:
            np.testing.assert_array_equal(queued[key], single[key])
            np.testing.assert_allclose(queued[key], expected[key], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_queueing_a_batch_never_waits_for_the_gpu(data, monkeypatch):
    """The host only waits for a batch when it reads its results (_Batch.wait): an operation that
    synchronises while batches are queued (a list index copied to the device, a pageable copy) stalls
    the device until the host has laid out the next batch: score-genome fell to 60% of the model's speed."""
    from genomelm.variants.genome import GenomeScorer

    _scored_ranges(data, 3, device="cuda")  # warm: Triton compilation, filters, spectra
    queue = GenomeScorer._queue

    def strict_queue(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return queue(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(GenomeScorer, "_queue", strict_queue)
    assert _scored_ranges(data, 3, device="cuda")  # a synchronising call would raise RuntimeError


def test_cuda_graphs_by_default_on_a_gpu_only(monkeypatch):
    from genomelm.model.cuda_graphs import GRAPHS_ENV_VAR

    monkeypatch.delenv(GRAPHS_ENV_VAR, raising=False)
    for device, expected in (("cpu", False), ("cuda", True)):  # set_cuda_graphs needs no GPU
        model = tiny_model()
        sg._use_cuda_graphs(model, torch.device(device))
        assert (model.backbone.graphs is not None) is expected
    monkeypatch.setenv(GRAPHS_ENV_VAR, "0")
    model = tiny_model()
    sg._use_cuda_graphs(model, torch.device("cuda"))
    assert model.backbone.graphs is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphed_gpu_run_gives_the_eager_tracks(data, tmp_path, monkeypatch):
    """score-genome replays CUDA graphs by default on a GPU: the tracks equal those of an eager run."""
    from genomelm.model.cuda_graphs import GRAPHS_ENV_VAR

    runs = {}
    for value in ("0", ""):
        monkeypatch.setenv(GRAPHS_ENV_VAR, value)
        sg.run(options(data["fasta"], tmp_path / f"run{value}", data["model"], device="cuda"))
        handle = pyBigWig.open(str(store.track_file(str(tmp_path / f"run{value}"), "llr_min")))
        runs[value] = np.concatenate(
            [handle.values(name, 0, size, numpy=True) for name, size in handle.chroms().items()]
        )
        handle.close()
    assert np.isfinite(runs[""]).sum() > 1000
    np.testing.assert_allclose(runs[""], runs["0"], rtol=1e-5, atol=1e-6)


def test_segment_saver_saves_in_order_and_reports_failures(tmp_path):
    from genomelm.variants.genome import SegmentSaver

    arrays = {"forward_ref": np.arange(5, dtype=np.float32)}
    with SegmentSaver(str(tmp_path)) as saver:
        for first in range(0, 30, 10):
            saver.save(0, (first, first + 10), first * 4, arrays)
    assert [store.segment_blocks(str(p)) for p in sorted(tmp_path.iterdir())] == [(0, 10), (10, 20), (20, 30)]
    with pytest.raises(FileNotFoundError), SegmentSaver(str(tmp_path / "missing")) as saver:
        saver.save(0, (0, 10), 0, arrays)


# --------------------------------------------------------------------------- torchrun


def test_torchrun_two_gloo_processes_write_the_single_process_files(data, tmp_path):
    out = tmp_path / "ranks"
    command = torchrun()
    command += ["-m", "genomelm", "score-genome", str(data["fasta"]), "-o", str(out), "--model", str(data["model"])]
    command += ["--context", str(CONTEXT), "--stride", str(STRIDE), "-b", "3", "--writers", "2", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    single = [a if a != str(out) else str(tmp_path / "single") for a in command[command.index("-m", 3) :]]
    done = subprocess.run([sys.executable, *single], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _files(out) == _files(tmp_path / "single")  # byte for byte (same threads: same rounding)


def test_plot_tracks_example_draws_a_region(data, tmp_path):
    pytest.importorskip("matplotlib", reason="install the [plot] extra")
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "examples" / "plot_tracks.py"
    spec = importlib.util.spec_from_file_location("plot_tracks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "t.png"
    module.plot(str(data["store"]), "chr2:11-250", str(out), [(100, "here")], None)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_torchrun_embed_two_gloo_processes_equal_one(data, tmp_path):
    from safetensors import safe_open

    fasta = write_fasta(tmp_path / "e.fa", {"a": random_dna(700, seed=1), "b": random_dna(260, seed=2)})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    args = ["-m", "genomelm", "embed", str(fasta), "--model", str(data["model"]), "--window", "100", "-b", "2"]
    args += ["--device", "cpu", "--pooling"]
    for pooling in ("mean", "none"):
        torchrun_workers = torchrun()
        ranks, single = tmp_path / f"ranks-{pooling}.st", tmp_path / f"single-{pooling}.st"
        for command in (
            torchrun_workers + args + [pooling, "-o", str(ranks)],
            [sys.executable, *args, pooling, "-o", str(single)],
        ):
            done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
            assert done.returncode == 0, done.stderr[-3000:]
        with safe_open(str(ranks), "np") as a, safe_open(str(single), "np") as b:
            assert a.keys() == b.keys() and "batch" not in a.keys()
            for key in a.keys():
                np.testing.assert_array_equal(a.get_tensor(key), b.get_tensor(key))
            assert a.metadata()["contigs"] == b.metadata()["contigs"]
        assert sorted(p.name for p in tmp_path.glob("*.part")) == []


def _varied_vcf(path: Path, genome: dict[str, str]) -> Path:
    """_mixed_vcf's records plus what the batch lookup path must hand to the engine or get right itself:
    INFO already set (other keys, and old values of the prefix), lower-case and multi-allelic alleles,
    ALT equal to REF, an indel next to SNVs, a position past the contig end."""
    records = _mixed_vcf(path.with_name("mixed-base.vcf"), genome)
    header = pysam.VariantFile(str(records)).header.copy()
    header.add_line('##INFO=<ID=DP,Number=1,Type=Integer,Description="depth">')
    header.add_line('##INFO=<ID=AF,Number=A,Type=Float,Description="frequency">')
    header.add_line('##INFO=<ID=GLM_LLR,Number=A,Type=Float,Description="an earlier run">')
    c2 = genome["chr2"].upper()
    with pysam.VariantFile(str(records)) as source, pysam.VariantFile(str(path), "w", header=header) as out:
        for n, record in enumerate(source):
            copy = out.new_record(contig=record.chrom, start=record.start, stop=record.stop, alleles=record.alleles)
            if n % 3 == 0:
                copy.info["DP"] = n
            if n % 5 == 0 and len(copy.alts) == 1:
                copy.info["AF"] = (0.25,)
            if n % 11 == 0 and len(copy.alts) == 1:
                copy.info["GLM_LLR"] = (1.5,)
            out.write(copy)
        other = [b for b in "ACGT" if b != c2[10]]
        for start, alleles in [
            (10, (c2[10].lower(), other[0].lower())),
            (11, (c2[11], c2[11])),
            (12, (c2[12], "A", "AT")),
        ]:
            out.write(out.new_record(contig="chr2", start=start, stop=start + 1, alleles=alleles))
        out.write(out.new_record(contig="chr2", start=299, stop=300, alleles=(c2[299], other[1])))
    return path


@pytest.mark.parametrize("calibrated", [False, True])
def test_batch_lookup_path_writes_the_engines_bytes(data, tmp_path, monkeypatch, calibrated):
    vcf_path = _varied_vcf(tmp_path / "varied.vcf", _genome())
    changes = dict(calibration=str(data["store"])) if calibrated else {}
    results = _both_paths(data, vcf_path, tmp_path, monkeypatch, "out.vcf", batch=7, **changes)
    assert results[True] == results[False]
    lines, (records, *_, replaced), _ = results[True]
    assert records > 300
    assert any(b"DP=" in line and b"GLM_LLR=" in line for line in lines)
    assert sum(b"GLM_LLR_PCT_CTX=" in line for line in lines) > 100 or not calibrated
    assert replaced > 0  # old GLM_LLR values removed


def _tricky_vcf(path: Path, genome: dict[str, str], samples: bool) -> Path:
    """A VCF written as text, with what the batch lookup path must read from htslib's line or hand to the
    engine: samples (INFO not the last column) or none, undeclared contigs (chrT, chrE: htslib adds them),
    a contig the FASTA lacks, QUAL and FILTER, numbers htslib re-renders (AF=0.250), a flag, '%' and a
    byte that is not UTF-8 in a value, a key holding the prefix (XGLM_), old values of the prefix,
    multi-allelic records with symbolic, spanning-deletion, duplicate and lower-case ALTs, four ALTs, no
    ALT, indels, an MNV, REF N or lower case or not the FASTA's, positions past a contig end, contig ends
    and an N run (no_context, n_in_context)."""
    c1, c2 = genome["chr1"], genome["chr2"]

    def alts(base: str, n: int = 1) -> str:
        return ",".join([b for b in "ACGT" if b != base.upper()][:n])

    header = [
        "##fileformat=VCFv4.2",
        "##contig=<ID=chr1,length=1500>",
        "##contig=<ID=chr2,length=300>",
        "##contig=<ID=chrZ,length=100>",
        '##FILTER=<ID=q10,Description="low quality">',
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="depth">',
        '##INFO=<ID=AF,Number=A,Type=Float,Description="frequency">',
        '##INFO=<ID=DB,Number=0,Type=Flag,Description="known">',
        '##INFO=<ID=NOTE,Number=1,Type=String,Description="free text">',
        '##INFO=<ID=GLM_LLR,Number=A,Type=Float,Description="an earlier run">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="genotype">',
        '##FORMAT=<ID=GQ,Number=1,Type=Float,Description="quality">',
    ]
    rows = []  # (chrom, 1-based pos, id, ref, alt, qual, filter, info)
    for pos in [*range(1, 6), *range(590, 645, 3), *range(700, 760, 2), 1499, 1500]:
        base = c1[pos - 1]
        rows.append(("chr1", pos, ".", base, alts(base, 1 + pos % 3), ".", ".", "."))
    for pos in range(2, 300, 7):
        base = c2[pos - 1]
        info = ["DP=12;AF=0.250", "DB", "NOTE=50%s_of%%d", "XGLM_=1", "GLM_LLR=1.5", "NOTE=caf\udce9"][pos % 6]
        rows.append(("chr2", pos, f"rs{pos}", base, alts(base), "30.50", "q10" if pos % 4 else "PASS", info))
    b = c2[20]
    rows += [
        ("chr2", 21, ".", b, f"{alts(b)},<DEL>", ".", ".", "."),
        ("chr2", 21, ".", b, f"{alts(b)},*", ".", ".", "."),
        ("chr2", 21, ".", b, f"{alts(b)},{alts(b)}", ".", ".", "."),
        ("chr2", 21, ".", b.lower(), f"{alts(b)},{alts(b).lower()}", ".", ".", "."),
        ("chr2", 21, ".", b, f"{alts(b, 3)},{alts(b)}", ".", ".", "AF=0.1,0.2,0.3,0.4"),
        ("chr2", 21, ".", b, ".", ".", ".", "."),
        ("chr2", 21, ".", b, b, ".", ".", "."),
        ("chr2", 21, ".", b + c2[21], b, ".", ".", "END=22"),
        ("chr2", 21, ".", b, b + "T", ".", ".", "."),
        ("chr2", 21, ".", b + c2[21], alts(b) + alts(c2[21]), ".", ".", "."),
        ("chr2", 21, ".", "N", "A", ".", ".", "."),
        ("chr2", 21, ".", alts(b), b, ".", ".", "."),
        ("chr2", 300, ".", c2[299], alts(c2[299]), ".", ".", "."),
        ("chr2", 400, ".", "A", "C", ".", ".", "."),
        ("chrZ", 5, ".", "A", "G", ".", ".", "DP=1"),
        ("chrT", 1, ".", "A", "C", ".", ".", "."),
        ("chrE", 1, ".", "C", "G,T", ".", ".", "."),
        ("chrE", 2, ".", "G", "A", ".", ".", "."),
    ]
    columns = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO" + ("\tFORMAT\tS1\tS2" if samples else "")
    lines = ["\t".join(map(str, row)) + ("\tGT:GQ\t0/1:30.50\t./.:." if samples else "") for row in rows]
    text = "\n".join([*header, columns, *lines]) + "\n"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    return path


def _both_paths(data, vcf_path: Path, tmp_path: Path, monkeypatch, output: str, batch: int = 5, **changes) -> dict:
    """Per path (False: the engine, True: the batch path), the run's lines (but the command line) and
    summary, or the error it raised. Batches of ``batch`` records end mid-contig."""
    results, taken = {}, []

    def counted(*args):
        found = lookup_lines(*args)
        taken.extend(info is not None for info in found.info)
        return found

    monkeypatch.setattr(sv, "lookup_lines", counted)
    for fast in (False, True):
        monkeypatch.setattr(sv, "FAST_LOOKUP", fast)
        monkeypatch.setattr(sv, "LOOKUP_BATCH", batch)
        out = tmp_path / ("fast" if fast else "engine") / output
        out.parent.mkdir(parents=True, exist_ok=True)
        store_dir = str(data["store"])
        opts = sv.ScoreVariantsOptions(str(vcf_path), str(data["fasta"]), str(out), precomputed=store_dir, **changes)
        try:
            summary = sv.run(opts)
        except InputError as exc:
            results[fast] = str(exc)
            continue
        with pysam.BGZFile(str(out), "rb") if output.endswith(".gz") else open(out, "rb") as handle:
            lines = [x for x in handle.read().split(b"\n") if not x.startswith(b"##genomelm_command=")]
        counts = (summary.records, summary.scored, summary.alleles_scored, summary.skipped, summary.replaced)
        results[fast] = (lines, counts, summary.alleles_unscored)
    assert 0 < sum(taken) < len(taken)  # both paths at work
    return results


@pytest.mark.parametrize("samples", [True, False])
@pytest.mark.parametrize("calibrated", [False, True])
def test_batch_lookup_path_on_tricky_records_writes_the_engines_bytes(data, tmp_path, monkeypatch, samples, calibrated):
    vcf_path = _tricky_vcf(tmp_path / "tricky.vcf", _genome(), samples)
    changes = dict(calibration=str(data["store"])) if calibrated else {}
    results = _both_paths(data, vcf_path, tmp_path, monkeypatch, "out.vcf.gz", **changes)
    assert results[True] == results[False]
    lines, (records, scored, _, skipped, replaced), _ = results[True]
    assert records == 117 and scored > 60 and replaced > 0
    assert {"not_snv", "ref_mismatch", "contig_missing", "no_context", "n_in_context", "out_of_range"} <= set(skipped)
    assert any(b"NOTE=caf\xe9;GLM_LLR_FWD=" in line for line in lines)  # the byte passed through
    assert any(b"XGLM_=1;GLM_LLR_FWD=" in line for line in lines)


def _bcf_with_tabs_and_newlines(tmp_path: Path, samples: bool) -> Path:
    """The varied VCF as BCF (with a sample or none), with a tab, a newline or multi-byte UTF-8 in a string
    value of some records: a BCF carries what a VCF line cannot, and htslib writes it as it is, so those
    lines cannot be read column by column."""
    vcf_path = _varied_vcf(tmp_path / "varied.vcf", _genome())
    bcf_path = tmp_path / "varied.bcf"
    with pysam.VariantFile(str(vcf_path)) as source:
        header = source.header.copy()
        header.add_line('##INFO=<ID=NOTE,Number=1,Type=String,Description="free text">')
        if samples:
            header.add_sample("S1")
        with pysam.VariantFile(str(bcf_path), "wb", header=header) as out:
            for n, record in enumerate(source):
                copy = out.new_record(contig=record.chrom, start=record.start, stop=record.stop, alleles=record.alleles)
                for key, value in record.info.items():
                    copy.info[key] = value
                if n % 4 == 1:
                    copy.info["NOTE"] = ["a\tb", "a\nb", "\u00e9t\u00e9"][n % 3]
                out.write(copy)
    return bcf_path


@pytest.mark.parametrize("samples", [True, False])
def test_batch_lookup_path_on_tabs_and_newlines_in_values_writes_the_engines_bytes(
    data, tmp_path, monkeypatch, samples
):
    bcf_path = _bcf_with_tabs_and_newlines(tmp_path, samples)
    results = _both_paths(data, bcf_path, tmp_path, monkeypatch, "out.vcf", batch=16, calibration=str(data["store"]))
    assert results[True] == results[False]
    lines = results[True][0]
    assert any(b"NOTE=a\tb;GLM_LLR_FWD=" in line for line in lines)
    assert any(b"NOTE=\xc3\xa9t\xc3\xa9;GLM_LLR_FWD=" in line for line in lines)


def test_batch_lookup_path_fails_on_the_first_skipped_record_with_strict(data, tmp_path, monkeypatch):
    vcf_path = _tricky_vcf(tmp_path / "tricky.vcf", _genome(), samples=False)
    results = _both_paths(data, vcf_path, tmp_path / "a", monkeypatch, "out.vcf", strict=True)
    assert results[True] == results[False] == "chr1:590: not scored (n_in_context); --strict makes this an error"
    c1 = _genome()["chr1"]  # an indel the engine skips, just before: its error comes first, in the same batch
    indel = f"chr1\t589\t.\t{c1[588:590]}\t{c1[588]}\t.\t.\t.\n"
    text = vcf_path.read_text(errors="surrogateescape").replace("chr1\t590\t", indel + "chr1\t590\t", 1)
    vcf_path.write_text(text, errors="surrogateescape")
    results = _both_paths(data, vcf_path, tmp_path / "b", monkeypatch, "out.vcf", strict=True)
    assert results[True] == results[False] == "chr1:589: not scored (not_snv); --strict makes this an error"
    assert not list(tmp_path.rglob("out.vcf"))


def test_batch_lookup_path_writes_an_index(data, tmp_path):
    vcf_path = all_snvs_vcf(tmp_path / "all.vcf", _genome())
    out = tmp_path / "o.vcf.gz"
    opts = sv.ScoreVariantsOptions(
        str(vcf_path), str(data["fasta"]), str(out), precomputed=str(data["store"]), index=True
    )
    summary = sv.run(opts)
    assert summary.records > 1700 and (tmp_path / "o.vcf.gz.tbi").exists()
    with pysam.VariantFile(str(out)) as handle:
        assert [r.pos for r in handle.fetch("chr2", 99, 100)] == [100]


def test_a_store_of_an_older_format_is_refused_with_a_hint(data, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    manifest = json.loads((data["store"] / store.MANIFEST).read_text())
    (old / store.MANIFEST).write_text(json.dumps({**manifest, "format_version": 1}))
    vcf_path = _mixed_vcf(tmp_path / "mixed.vcf", _genome())
    opts = sv.ScoreVariantsOptions(str(vcf_path), str(data["fasta"]), str(tmp_path / "o.vcf"), precomputed=str(old))
    with pytest.raises(
        FormatError, match="format version 1, this genomelm reads versions 2-3: run `genomelm score-genome`"
    ):
        sv.run(opts)
    assert not (tmp_path / "o.vcf").exists()
