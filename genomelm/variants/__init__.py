"""The variant-scoring engine (DESIGN.md §2, §6): below commands/, above formats/, model/, runtime.

Modules:

- ``reference``: ``Reference`` (token ids and N counts of a FASTA by 0-based half-open span, from
  cached 16 kb tiles) and ``open_fasta`` (random access or a one-line error).
- ``llr``: the genome-fixed llr tiling (``LlrTiling``, ``llr_tiling``), the pass runner
  (``run_passes``) and the per-block log-probabilities below, shared by score-variants and
  score-genome.
- ``windows``: centred windows with equal numbers of scored tokens for REF and ALT (delta-ll and
  embedding distance), and the model calls that score them (``window_stats``, ``token_log_probs``).
- ``planner``: ``Site`` (one record being scored), ``Planner`` (contig, range, REF checks, N rule)
  and every skip reason (``SKIP_REASONS``); ``Variant`` for in-memory records.
- ``methods``: the methods table ``METHODS`` (name -> scores with INFO suffix, Number, description,
  and the compute function).
- ``engine``: ``VariantScorer`` (records -> Sites with values, chunk by chunk) and ``ScoringSettings``.

Per-block log-probabilities (stable API; score-genome builds on it)::

    block_log_probs(model, reference, contig, blocks, tiling, *, device, precision="fp32",
                    batch_size=8, positions=None) -> list[BlockLogProbs]

For each llr block k of ``contig`` in ``blocks`` (block k = 0-based positions
[k*stride, (k+1)*stride), clipped to the contig), one forward pass (left context) and one
reverse-complement pass (right context), batched ``batch_size`` passes per model call, give a
``BlockLogProbs`` with

- ``positions`` (P,) int64: the 0-based positions (every position of the block, or those in
  ``positions[k]`` when that mapping is given);
- ``forward`` (P, 4) float64: log P(base | left context) for the bases A, C, G, T;
- ``reverse`` (P, 4) float64: log P(base | right context) from the reverse-complement pass,
  mapped back to forward-strand coordinates and bases (column A = the reverse pass's log P(T));
- ``has_forward`` / ``has_reverse`` (P,) bool: whether the strand has any context there (a
  contig's first base has no left context, its last no right context: NaN rows);
- ``snv_llr(pos, ref, alts) -> (forward, reverse)``: the llr log P(alt) - log P(ref) per strand,
  exactly the values ``genomelm score-variants --method llr`` reports for those SNVs (its llr path
  calls ``log_probs_of_blocks``, the multi-contig form of this function); the reported LLR is the
  mean of the strands that have context.
"""

from genomelm.variants.engine import ScoringSettings, VariantScorer
from genomelm.variants.llr import (
    BASES,
    BlockLogProbs,
    BlockRequest,
    LlrResult,
    LlrTiling,
    SnvQuery,
    block_log_probs,
    llr_tiling,
    log_probs_of_blocks,
    model_window,
    run_passes,
    score_llr_naive,
    score_llr_shared,
)
from genomelm.variants.methods import METHODS, Method, Score, check_methods, score_columns
from genomelm.variants.planner import SKIP_REASONS, Site, Variant
from genomelm.variants.reference import Reference, open_fasta
from genomelm.variants.windows import CentredWindow, centred_window

__all__ = [
    "BASES",
    "METHODS",
    "SKIP_REASONS",
    "CentredWindow",
    "Method",
    "Score",
    "ScoringSettings",
    "Site",
    "Variant",
    "VariantScorer",
    "centred_window",
    "check_methods",
    "score_columns",
    "BlockLogProbs",
    "BlockRequest",
    "LlrResult",
    "LlrTiling",
    "Reference",
    "SnvQuery",
    "block_log_probs",
    "llr_tiling",
    "log_probs_of_blocks",
    "model_window",
    "open_fasta",
    "run_passes",
    "score_llr_naive",
    "score_llr_shared",
]
