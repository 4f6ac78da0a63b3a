"""`genomelm score-variants`: zero-shot variant effect scores, written into the VCF's INFO column.

Options -> run() -> Summary over the engine in genomelm.variants (methods, windows, skip reasons:
see genomelm/variants/ and README "Score definitions"). Every value is per ALT allele (Number=A),
absent where an allele has none. Records that cannot be scored are written unchanged apart from
``<prefix>SKIP=<reason>`` and counted in the summary.

With --precomputed (no --model, no --tsv) records go through a batched path (genomelm.variants.
fast_lookup): CHROM, POS, REF and ALT are read from htslib's lines for a batch of records at once
(formats.vcf_lines), plain SNVs are looked up and calibrated as numpy arrays, and their INFO text is
spliced into those lines by one join per batch; every other record still goes through the engine.
The output is byte for byte the engine's (tested); ``FAST_LOOKUP = False`` turns the batched path
off. A .vcf.gz output is compressed on a second thread unless --threads 1 (the same bytes either way).
"""

from __future__ import annotations

import gc
import os
import time
from collections import Counter
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from itertools import islice

import numpy as np

from genomelm import __version__
from genomelm.commands._common import load_inference_model, model_label, select_device, set_threads
from genomelm.commands._provenance import command_line, model_line, model_sha256
from genomelm.errors import InputError, UsageError
from genomelm.formats import vcf
from genomelm.formats.atomic import refuse_overwriting_inputs
from genomelm.formats.atomic import same_file as _same_file
from genomelm.formats.fasta import parse_regions
from genomelm.formats.vcf_lines import RecordLines, spliced, tabs_per_line
from genomelm.log import get_logger, progress
from genomelm.runtime import check_batch_size, check_max_n_frac
from genomelm.variants import (
    METHODS,
    SKIP_REASONS,
    LlrTiling,
    Reference,
    ScoringSettings,
    VariantScorer,
    check_methods,
    open_fasta,
    score_columns,
)
from genomelm.variants import centred_window as _centred_window
from genomelm.variants import llr_tiling as _llr_tiling
from genomelm.variants.fast_lookup import LookedUpBatch, lookup_lines
from genomelm.variants.methods import CALIBRATION
from genomelm.variants.precomputed import check_store_model, open_stores
from genomelm.variants.windows import CentredWindow

log = get_logger(__name__)

MISMATCH_POLICIES = ("skip", "error")
FAST_LOOKUP = True  # --precomputed: the batched lookup path (False: every record through the engine)
LOOKUP_BATCH = 8192  # records looked up at once by that path


@dataclass
class ScoreVariantsOptions:
    input: str  # VCF/BCF path, or '-' for stdin
    fasta: str  # reference FASTA (plain or bgzip: random access needed)
    output: str = "-"  # .vcf, .vcf.gz, .bcf, or '-' for VCF on stdout
    model: str | None = None
    methods: list[str] = field(default_factory=lambda: ["llr"])
    context: int | None = None  # llr: least context (bases) on each strand; default half the model window
    stride: int | None = None  # llr: length of the blocks scored by one pass; default the rest of the window
    window: int | None = None  # delta-ll / embedding: centred REF window; default min(model window / 2, 4096)
    regions: list[str] | None = None  # BED paths and/or samtools-style regions (1-based inclusive)
    tsv: str | None = None  # also write a flat table here
    index: bool = False  # write a .tbi/.csi beside a .vcf.gz/.bcf output
    info_prefix: str = "GLM_"
    on_ref_mismatch: str = "skip"
    strict: bool = False  # any record that cannot be scored is an error
    max_n_frac: float = 0.05  # skip a variant whose context has more N than this
    batch_size: int | None = None  # default: runtime.default_batch_size (8 on a GPU; 32k tokens on a CPU)
    device: str = "auto"
    precision: str = "fp32"
    conv_backend: str | None = None
    threads: int | None = None
    trust_checkpoint: bool = False
    precomputed: str | None = None  # a score-genome OUTDIR: llr looked up there, no model
    calibration: str | None = None  # a score-genome OUTDIR: rank llr among the SNVs of its genome

    def settings(self) -> ScoringSettings:
        """The engine's settings: the options of the same names."""
        return ScoringSettings(**{f.name: getattr(self, f.name) for f in fields(ScoringSettings)})


@dataclass
class ScoreVariantsSummary:
    output: str
    records: int = 0
    scored: int = 0  # records with at least one value
    alleles_scored: int = 0
    skipped: Counter = field(default_factory=Counter)  # records without any value, by reason
    alleles_unscored: Counter = field(default_factory=Counter)  # ALT alleles without a value, by reason
    forward_passes: int = 0  # sequences run through the model (one per window and strand)
    replaced: int = 0  # old INFO values with the output prefix removed from records (a re-run, another tool)
    seconds: float = 0.0

    @property
    def variants_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def info_keys(prefix: str) -> dict[str, str]:
    """Score name (and 'skip') -> INFO key with ``prefix``."""
    keys = {s.name: prefix + s.suffix for method in METHODS.values() for s in method.scores}
    return {**keys, "skip": prefix + "SKIP"}


def info_fields(
    opts: ScoreVariantsOptions, label: str, tiling: LlrTiling, window: CentredWindow | None, genome: str = ""
) -> list[vcf.InfoField]:
    """The INFO header lines of the requested methods (each names method, model, context, strands)."""
    span = f"{tiling.context}-{tiling.pass_length} bp (genome-fixed windows, stride {tiling.stride})"
    fields = []
    for score in (s for name in opts.methods for s in METHODS[name].scores):
        text = score.description.format(model=label, span=span, window=window and window.length, genome=genome)
        fields.append(vcf.InfoField(opts.info_prefix + score.suffix, score.number, score.type, text))
    reasons = "|".join(SKIP_REASONS)
    text = f"Why genomelm could not score this record ({reasons})"
    return [*fields, vcf.InfoField(opts.info_prefix + "SKIP", "1", "String", text)]


def llr_tiling(opts: ScoreVariantsOptions, l_max: int) -> LlrTiling:
    return _llr_tiling(opts.context, opts.stride, l_max)


def centred_window(opts: ScoreVariantsOptions, l_max: int) -> CentredWindow:
    return _centred_window(opts.window, l_max)


# --------------------------------------------------------------------------- the command


def run(opts: ScoreVariantsOptions) -> ScoreVariantsSummary:
    _check_options(opts)
    set_threads(opts.threads)
    device = select_device(opts.device)
    regions = [r for spec in opts.regions for r in parse_regions(spec)] if opts.regions else None
    started = time.perf_counter()
    summary = ScoreVariantsSummary(opts.output)
    with ExitStack() as stack:
        fasta = stack.enter_context(open_fasta(opts.fasta, "score-variants"))
        reader = stack.enter_context(vcf.VariantReader(opts.input))
        reference = Reference(fasta)
        lookups = _Lookups(opts, reference.lengths)
        model = lookups.model(opts, device)
        scorer = VariantScorer(
            model, reference, opts.settings(), device, opts.fasta, lookups.precomputed, lookups.calibration
        )
        rescoring, provenance = _prepare_header(reader, opts, model, scorer, lookups)
        writer = stack.enter_context(vcf.VariantWriter(opts.output, reader, opts.index, None, _compressors(opts)))
        tsv = stack.enter_context(_tsv_writer(opts, provenance))
        clear = list(info_keys(opts.info_prefix).values()) if rescoring else []
        _score_all(opts, scorer, reader.records(regions), writer, tsv, summary, clear)
    summary.forward_passes = scorer.passes
    summary.seconds = time.perf_counter() - started
    _report(summary)
    return summary


def _compressors(opts: ScoreVariantsOptions) -> int:
    """Threads compressing a .vcf.gz output beside the main one: one, unless --threads 1 (or one CPU)
    asks for a single thread. Compression is a third of the lookup path's time on one thread."""
    return 0 if opts.threads == 1 or (os.cpu_count() or 1) < 2 else 1


def _check_options(opts: ScoreVariantsOptions) -> None:
    opts.methods = check_methods(opts.methods)
    _check_lookup_options(opts)
    if opts.on_ref_mismatch not in MISMATCH_POLICIES:
        raise UsageError(f"--on-ref-mismatch must be skip or error, got {opts.on_ref_mismatch!r}")
    check_batch_size(opts.batch_size)
    check_max_n_frac(opts.max_n_frac)
    vcf.check_info_prefix(opts.info_prefix)
    _check_paths(opts)


def _check_paths(opts: ScoreVariantsOptions) -> None:
    vcf.output_format(opts.output)
    if opts.index and vcf.output_format(opts.output) == "vcf":
        raise UsageError("--index needs a bgzipped VCF (.vcf.gz) or BCF (.bcf) output")
    refuse_overwriting_inputs({"--output": opts.output, "--tsv": opts.tsv}, [opts.input, opts.fasta, opts.model])
    if opts.tsv is not None and (opts.tsv == "-" or _same_file(opts.tsv, opts.output)):
        raise UsageError("--tsv needs a file path of its own (not '-' nor the VCF output)")
    vcf.check_writable(opts.output)
    if opts.tsv is not None:
        vcf.check_writable(opts.tsv, "--tsv")


def _prepare_header(reader, opts, model, scorer: VariantScorer, lookups: _Lookups) -> tuple[bool, dict]:
    """Declare the INFO fields and the provenance lines; (re-scoring an output?, provenance)."""
    label, line = lookups.model_label(opts, model)
    tiling, window = scorer.tiling, scorer.window
    rescoring = reader.add_info(info_fields(opts, label, tiling, window, lookups.genome(opts)))
    settings = (
        f"model={label};methods={','.join(opts.methods)};context={tiling.context};stride={tiling.stride};"
        f"window={window.length if window else '.'};precision={opts.precision};strands=both;"
        f"max_n_frac={opts.max_n_frac}"
    )
    provenance = {
        "genomelm_version": __version__,
        "genomelm_command": command_line("score-variants", opts, positional=("input",)),
        "genomelm_model": line,
        "genomelm_scoreVariantsSettings": settings,
    }
    for key, value in provenance.items():
        reader.add_meta(key, value)
    return rescoring, provenance


# --------------------------------------------------------------------------- score-genome stores


def _check_lookup_options(opts: ScoreVariantsOptions) -> None:
    """--precomputed holds llr only; --calibration adds the calibration scores after llr."""
    if opts.precomputed is not None and opts.methods != ["llr"] and opts.methods != ["llr", CALIBRATION]:
        raise UsageError("--precomputed holds llr values only: leave out --method delta-ll / embedding")
    if CALIBRATION in opts.methods and opts.calibration is None:
        raise UsageError("the calibration scores need --calibration OUTDIR (a score-genome store)")
    if opts.calibration is not None:
        if "llr" not in opts.methods:
            raise UsageError("--calibration ranks llr values: add --method llr")
        opts.methods = [m for m in opts.methods if m != CALIBRATION] + [CALIBRATION]


class _Lookups:
    """The score-genome stores of a run (--precomputed, --calibration), checked against the inputs."""

    def __init__(self, opts: ScoreVariantsOptions, lengths: dict[str, int]):
        self.stores = open_stores(opts.precomputed, opts.calibration, lengths, opts.fasta, opts.context, opts.stride)
        self.precomputed, self.calibration = self.stores.precomputed, self.stores.calibration
        self._manifest = self.stores.manifest

    def model(self, opts: ScoreVariantsOptions, device):
        """The model to score with: None when the store gives the values and no --model was named."""
        if self.precomputed is not None and opts.model is None:
            return None
        model = load_inference_model(opts.model, device, opts.conv_backend, opts.trust_checkpoint)
        check_store_model(self.stores, model_sha256(opts.model, model), model_label(opts.model, model))
        return model

    def model_label(self, opts: ScoreVariantsOptions, model) -> tuple[str, str]:
        """(label for INFO descriptions, ##genomelm_model value)."""
        if model is not None:
            label = model_label(opts.model, model)
            return label, model_line(label, opts.model, model)
        stored = self._manifest["model"]
        return f"{stored['name']} (precomputed)", f"{stored['name']},sha256={stored['sha256']}"

    def genome(self, opts: ScoreVariantsOptions) -> str:
        return f"this genome ({os.path.basename(opts.fasta)})"


def _tsv_writer(opts: ScoreVariantsOptions, provenance: dict):
    if opts.tsv is None:
        return nullcontext(None)
    columns = ["chrom", "pos", "id", "ref", "alt"] + score_columns(opts.methods) + ["skip"]
    comment = "# " + "; ".join(f"{k}={v}" for k, v in provenance.items())
    return vcf.TsvWriter(opts.tsv, columns, comment=comment)


def _score_all(opts, scorer: VariantScorer, records, writer, tsv, summary, clear: list[str]) -> None:
    if FAST_LOOKUP and scorer.precomputed is not None and scorer.model is None and tsv is None:
        _look_up_all(opts, scorer, records, writer, summary, clear)
        return
    keys, columns = info_keys(opts.info_prefix), score_columns(opts.methods)
    with progress("variant") as bar:
        task = bar.add_task("score-variants", total=None)
        for chunk, sites in scorer.score_all(records):
            for site in sites:
                skip = _count(opts, site, summary)
                values = {keys[name]: tuple(v) for name, v in site.values.items()}
                record_values = {keys["skip"]: skip, **values}
                summary.replaced += vcf.set_info(site.record, record_values, clear, prefix=opts.info_prefix)
                writer.write(site.record)
                if tsv is not None:
                    _tsv_rows(tsv, site, columns)
            bar.advance(task, len(chunk))


def _look_up_all(opts, scorer: VariantScorer, records, writer, summary, clear: list[str]) -> None:
    """The batched lookup path (genomelm.variants.fast_lookup): the same records and INFO values as the
    engine's path above, which still scores every record the batch path hands back."""
    keys = info_keys(opts.info_prefix)
    records = iter(records)
    with progress("variant") as bar, _young_heap():
        task = bar.add_task("score-variants", total=None)
        while batch := list(islice(records, LOOKUP_BATCH)):
            tabs = tabs_per_line(len(batch[0].header.samples))
            lines = RecordLines.of(list(map(str, batch)), tabs)  # htslib's text: read here, spliced, written
            looked = lookup_lines(scorer, lines, keys)
            replaced = _engine_lines(opts, scorer, batch, looked, summary, clear)
            taken = looked.records
            _count_looked_up(looked, taken, summary)
            text = _splice(opts, batch, lines, looked, taken, replaced, summary, clear)
            writer.write_lines([text], max(record.pos for record in batch) if writer.index else 0)
            bar.advance(task, len(batch))


@contextmanager
def _young_heap():
    """Leave the objects alive before the loop (torch, numpy, the stores: most of the heap) out of the
    cyclic garbage collector's full passes while it runs: a batch allocates tens of thousands of short-lived
    containers, and each full pass over the whole heap they trigger cost a fifth of the lookup path's time.
    Nothing is lost: those objects are handed back to the collector after the loop (not when someone else
    froze the heap already)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _engine_lines(opts, scorer: VariantScorer, batch: list, looked: LookedUpBatch, summary, clear) -> dict[int, str]:
    """The lines of the records the batch path handed back, scored by the engine, by index in the batch.
    --strict: the first record skipped in the batch is an error, whichever path skipped it."""
    first = looked.first_skipped() if opts.strict else None
    engine = np.flatnonzero(looked.info[:first] == None).tolist()  # noqa: E711 (first: engine's errors first)
    keys = info_keys(opts.info_prefix)
    lines = {}
    for i, site in zip(engine, scorer.score([batch[i] for i in engine])):
        skip = _count(opts, site, summary)
        values = {keys["skip"]: skip, **{keys[name]: tuple(v) for name, v in site.values.items()}}
        lines[i] = _annotated(opts, batch[i], values, summary, clear)
    if first is not None:
        record = batch[first]
        raise InputError(
            f"{record.chrom}:{record.pos}: not scored ({looked.skip[first]}); --strict makes this an error"
        )
    return lines


def _annotated(opts, record, values: dict, summary: ScoreVariantsSummary, clear: list[str]) -> str:
    """The record's line with ``values`` set through pysam (old values of the prefix removed)."""
    summary.replaced += vcf.set_info(record, values, clear, prefix=opts.info_prefix)
    return str(record)


def _splice(
    opts, batch: list, lines: RecordLines, looked: LookedUpBatch, taken, replaced: dict, summary, clear: list[str]
) -> str:
    """The batch's text: htslib's lines, with the INFO text of each record of the batch path (``taken``:
    ``looked.records``) spliced in after its INFO column, or in place of a '.' there (what set_info + str
    give: new keys go last), and the engine's lines (``replaced``, by index) in place of theirs. A record
    of the batch path whose INFO holds the prefix anywhere (values of an earlier run, to be removed) goes
    through set_info instead."""
    old = taken[lines.holds(7, opts.info_prefix.encode())[taken]]
    for i in old.tolist():
        replaced[i] = _annotated(opts, batch[i], _looked_up_values(opts, looked, i), summary, clear)
    taken = np.setdiff1d(taken, old)
    dot = (lines.width(7)[taken] == 1) & (lines.array[lines.begin[taken, 7]] == ord("."))
    start = np.where(dot, lines.begin[taken, 7], lines.end[taken, 7])
    whole = np.fromiter(replaced, dtype=np.int64, count=len(replaced))
    order = np.argsort(np.concatenate([taken, whole]), kind="stable")
    starts = np.concatenate([start, lines.line_start[whole]])[order]
    ends = np.concatenate([start + dot, lines.line_end[whole] + 1])[order]  # a line: its newline too
    seps = np.concatenate([np.where(dot, b"", b";").astype(object), np.full(len(whole), b"", dtype=object)])
    texts = [replaced[i].encode("utf-8", "surrogateescape") for i in whole.tolist()]
    inserts = np.concatenate([looked.info[taken], np.array(texts, dtype=object)])
    text = spliced(lines.data, starts, ends, seps[order].tolist(), inserts[order].tolist())
    return text.decode("utf-8", "surrogateescape")  # the writer encodes it back: the same bytes


def _looked_up_values(opts, looked: LookedUpBatch, i: int) -> dict:
    """INFO key -> value of record ``i`` of the batch path, for set_info."""
    keys = info_keys(opts.info_prefix)
    return {keys["skip"]: looked.skip[i], **{keys[name]: v for name, v in looked.values(i).items()}}


def _count_looked_up(looked: LookedUpBatch, taken, summary: ScoreVariantsSummary) -> None:
    """Count the records of the batch path (``taken``) in the summary (one outcome for all their ALTs)."""
    skips = looked.skip[taken]
    summary.records += len(taken)
    summary.skipped.update(skip for skip in skips.tolist() if skip is not None)
    scored = skips == None  # noqa: E711 (elementwise on an object array)
    summary.scored += int(scored.sum())
    summary.alleles_scored += int(looked.alleles[taken][scored].sum())


def _count(opts: ScoreVariantsOptions, site, summary: ScoreVariantsSummary) -> str | None:
    """Count the site in the summary; return its SKIP value (--strict: an error instead)."""
    summary.records += 1
    skip = site.skip_reason()
    if skip is not None:
        summary.skipped[skip] += 1
        if opts.strict:
            record = site.record
            raise InputError(f"{record.chrom}:{record.pos}: not scored ({skip}); --strict makes this an error")
        return skip
    scored = [site.scored(a) for a in range(len(site.alts))]
    summary.scored += 1
    summary.alleles_scored += sum(scored)
    summary.alleles_unscored.update(site.allele_reason(a) for a, ok in enumerate(scored) if not ok)
    return None


def _tsv_rows(tsv, site, columns: list[str]) -> None:
    record = site.record
    for alt, scores, reason in site.allele_results():
        tsv.row(
            [record.chrom, record.pos, record.id or ".", record.ref, alt, *(scores.get(c) for c in columns), reason]
        )


def _report(summary: ScoreVariantsSummary) -> None:
    skipped = ", ".join(f"{reason} {n}" for reason, n in summary.skipped.most_common()) or "none"
    log.info(
        "scored %d of %d records (%d alleles) with %d forward passes in %.1f s (%.0f variants/s); skipped: %s -> %s",
        *(summary.scored, summary.records, summary.alleles_scored, summary.forward_passes, summary.seconds),
        *(summary.variants_per_second, skipped, summary.output),
    )
    if summary.replaced:
        log.info("replaced %d old INFO value(s) with the prefix of the new ones", summary.replaced)
    if summary.alleles_unscored:
        other = ", ".join(f"{reason} {n}" for reason, n in summary.alleles_unscored.most_common())
        log.info("ALT alleles without a value in scored records: %s", other)
