"""The Python API: variant scores, per-base log-likelihoods and embeddings from a script or notebook.

Same engines, same numbers as the CLI (``score_variants`` runs genomelm.variants exactly as
``genomelm score-variants`` does; ``embed_sequences`` pools as ``genomelm embed`` does). This module
sits beside cli.py on the top floor (DESIGN.md §3); ``import genomelm`` loads it (and torch) only
when one of its functions is first used.

``model`` is a loaded model (``genomelm.load_model(...)``: load once, pass it to every call) or
anything ``--model`` accepts (None = the shipped default); names are loaded once per process and
device and then reused.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch

from genomelm.commands._common import load_inference_model, model_label
from genomelm.commands._provenance import model_sha256
from genomelm.commands.embed import POOLINGS, EmbedOptions, embed_ids
from genomelm.errors import UsageError
from genomelm.formats import vcf
from genomelm.formats.fasta import parse_regions
from genomelm.model.lm import HyenaDNA
from genomelm.runtime import batched, check_batch_size, default_batch_size, select_device
from genomelm.tokenizer import CharTokenizer, reverse_complement_ids
from genomelm.variants import Reference, ScoringSettings, Variant, VariantScorer, open_fasta
from genomelm.variants.methods import CALIBRATION, check_methods
from genomelm.variants.precomputed import check_store_model, open_stores
from genomelm.variants.windows import token_log_probs


@dataclass
class VariantScore:
    """The scores of one ALT allele of one record."""

    chrom: str
    pos: int  # 1-based VCF POS
    id: str | None
    ref: str
    alt: str
    scores: dict[str, float]  # name -> value: llr, llr_fwd, llr_rev, dll, dll_mean, emb_cos, emb_l2 (those computed)
    skip: str | None  # why the allele has no value (the SKIP reasons of score-variants); None when scored


def score_variants(
    variants: str | os.PathLike | Iterable,
    fasta: str | os.PathLike,
    model: HyenaDNA | str | None = None,
    methods: Sequence[str] = ("llr",),
    *,
    device: str | torch.device | None = None,
    regions: list[str] | None = None,
    precomputed: str | os.PathLike | None = None,
    calibration: str | os.PathLike | None = None,
    **settings,
) -> Iterator[VariantScore]:
    """Score every ALT allele of ``variants``: a VCF/BCF path, or records ``(chrom, pos, ref, alt)``
    with a 1-based POS and ``alt`` one allele or a sequence of them (or ``genomelm.variants.Variant``).

    ``methods``: llr, delta-ll, embedding. ``settings``: context, stride, window, max_n_frac,
    on_ref_mismatch, batch_size, precision (the score-variants options of those names).
    ``regions`` (VCF input only, indexed): BED paths or chr:start-end (1-based inclusive).
    ``precomputed``: a `genomelm score-genome` OUTDIR whose llr values are looked up instead of computed
    (llr only; no model is loaded unless ``model`` is given, and then it must be the store's).
    ``calibration``: such an OUTDIR whose calibration table ranks each llr (scores llr_pct, llr_phred,
    llr_pct_ctx, llr_phred_ctx), as ``score-variants --calibration``.
    Yields one VariantScore per ALT allele, in input order; the file is read as the results are consumed.
    """
    methods = _methods_with_stores(methods, precomputed, calibration)
    with ExitStack() as stack:
        fasta_source = stack.enter_context(open_fasta(str(fasta), "score_variants"))
        reference = Reference(fasta_source)
        stores = open_stores(
            _path(precomputed), _path(calibration), reference.lengths, str(fasta),
            settings.get("context"), settings.get("stride"),
        )  # fmt: skip
        loaded, device = _scoring_model(model, device, stores)
        records = _records(variants, regions, stack)
        scoring = ScoringSettings(methods=tuple(methods), **settings)
        scorer = VariantScorer(
            loaded, reference, scoring, device, str(fasta), stores.precomputed, stores.calibration
        )  # fmt: skip
        for _, sites in scorer.score_all(records):
            for site in sites:
                record = site.record
                for alt, scores, skip in site.allele_results():
                    yield VariantScore(record.chrom, record.pos, record.id, record.ref, alt, scores, skip)


def _path(store: str | os.PathLike | None) -> str | None:
    return None if store is None else os.fspath(store)


def _methods_with_stores(methods: Sequence[str], precomputed, calibration) -> list[str]:
    """The methods of a call, checked against its stores; 'calibration' last when a table ranks llr."""
    methods = check_methods(list(methods))
    if precomputed is not None and methods != ["llr"]:
        raise UsageError("precomputed= holds llr values only: methods=('llr',)")
    if calibration is not None:
        if "llr" not in methods:
            raise UsageError("calibration= ranks llr values: add 'llr' to methods")
        methods.append(CALIBRATION)
    return methods


def _scoring_model(model, device, stores) -> tuple[HyenaDNA | None, torch.device]:
    """The model (None: the precomputed store gives every value) and the device to score on."""
    if stores.precomputed is not None and model is None:
        return None, torch.device("cpu")
    if stores.manifest is not None and isinstance(model, HyenaDNA):
        # a store's values belong to the weight file that made them, and a loaded model has no file to hash
        raise UsageError(
            "with precomputed= or calibration=, name the model by its path (model='DIR'), not a loaded one"
        )
    loaded, device = _model(model, device)
    if stores.manifest is not None:
        spec = None if model is None else str(model)
        check_store_model(stores, model_sha256(spec, loaded), model_label(spec, loaded))
    return loaded, device


def _records(variants, regions, stack: ExitStack) -> Iterable:
    if isinstance(variants, (str, os.PathLike)):
        reader = stack.enter_context(vcf.VariantReader(str(variants)))
        return reader.records([r for spec in regions for r in parse_regions(spec)] if regions else None)
    if regions:
        raise UsageError("regions= needs a VCF path (in-memory records are all scored)")
    return (_variant(v) for v in variants)


def _variant(item) -> Variant:
    if isinstance(item, Variant):
        return item
    chrom, pos, ref, alt = item
    alts = (alt,) if isinstance(alt, str) else tuple(alt)
    return Variant(str(chrom), int(pos), ref, alts)


def log_likelihood(
    sequences: str | Sequence[str],
    model: HyenaDNA | str | None = None,
    *,
    both_strands: bool = False,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    batch_size: int | None = None,
):
    """Per-base log-probabilities (natural log) of DNA ``sequences`` under the model.

    For a sequence of length L: a float64 array (L,) with ``[t] = log P(base t | bases before t)``
    (NaN at t = 0: no context); with ``both_strands`` an array (2, L) whose second row is
    ``log P(base t | bases after t)`` read on the reverse-complement strand and mapped back to these
    positions (NaN at t = L - 1). A list of sequences gives a list of arrays. ``batch_size``: sequences per
    model call (default: 8 on a GPU; on a CPU as many as fit 32,768 tokens of the longest sequence).
    """
    loaded, device = _model(model, device)
    ids = [CharTokenizer().encode(s) for s in ([sequences] if isinstance(sequences, str) else sequences)]
    batch_size = _batch_size(batch_size, device, ids)
    forward = token_log_probs(loaded, ids, device, precision, batch_size)
    out = forward
    if both_strands:
        reverse = token_log_probs(loaded, [reverse_complement_ids(i) for i in ids], device, precision, batch_size)
        out = [np.stack([f, r[::-1]]) for f, r in zip(forward, reverse)]
    return out[0] if isinstance(sequences, str) else out


def embed_sequences(
    sequences: str | Sequence[str],
    model: HyenaDNA | str | None = None,
    *,
    pooling: str = "mean",
    layer: int = -1,
    rc: bool = False,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    batch_size: int | None = None,
):
    """Embeddings of DNA ``sequences``, as ``genomelm embed`` computes them for windows.

    pooling 'mean' or 'last': a float32 array (N, D) (D,) for one string; 'none': per-token
    matrices (L, D), a list for a list of sequences. ``layer`` -1 = final normalised output, k =
    after block k; ``rc`` averages the forward and reverse-complement strands. ``batch_size`` as in
    ``log_likelihood``.
    """
    if pooling not in POOLINGS:
        raise UsageError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    loaded, device = _model(model, device)
    ids = [CharTokenizer().encode(s) for s in ([sequences] if isinstance(sequences, str) else sequences)]
    batch_size = _batch_size(batch_size, device, ids)
    opts = EmbedOptions("", "", pooling=pooling, layer=layer, rc=rc, precision=precision, batch_size=batch_size)
    vectors = [
        v.astype(np.float32) for batch in batched(ids, batch_size) for v in embed_ids(loaded, batch, device, opts)
    ]
    if isinstance(sequences, str):
        return vectors[0]
    return np.stack(vectors) if pooling != "none" else vectors


def _batch_size(asked: int | None, device: torch.device, ids: list) -> int:
    """``batch_size`` as asked, else the commands' default for the longest sequence (runtime.default_batch_size:
    8 on a GPU; on a CPU as many as fit 32,768 tokens)."""
    check_batch_size(asked)
    if asked is not None:
        return asked
    return default_batch_size(device, max((len(i) for i in ids), default=1))


def _model(model, device) -> tuple[HyenaDNA, torch.device]:
    """(model in eval mode, device): a loaded model stays where it is unless ``device`` says otherwise."""
    if isinstance(model, HyenaDNA):
        if device is None:
            return model.eval(), next(model.parameters()).device
        device = select_device(str(device))
        return model.eval().to(device), device
    device = select_device(str(device) if device is not None else "auto")
    return _load_cached(None if model is None else str(model), str(device)), device


@functools.lru_cache(maxsize=4)
def _load_cached(spec: str | None, device: str) -> HyenaDNA:
    return load_inference_model(spec, torch.device(device))
