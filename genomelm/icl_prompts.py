"""In-context prompts for sequence classification with a causal DNA language model (HyenaDNA paper §4.4).

A class label is written as ONE vocabulary token and the model is asked for the token that follows the
query. The token format (official ids, tokenizer.VOCAB; no [CLS] or [BOS] anywhere) is::

    prompt = D_1 D_2 ... D_m Q
    D_i    = x_i [SEP] y_i [SEP]     a demonstration: its bases, [SEP], its label token, [SEP]
    Q      = x_q [SEP]               the query; the next-token distribution after this final [SEP]
                                     is read as the query's label

With k shots there are m = k * C demonstrations (C classes), k of each class, drawn without replacement
from the demonstration pool and then shuffled, so that their order carries no label information. k = 0
gives the bare query ``x_q [SEP]``. A soft prompt (genomelm.model.soft_prompt) puts P learned vectors before
the first token; they count towards the model's maximum length.

Length in tokens: sum_i (len(x_i) + 3) + len(x_q) + 1. When that is over budget, k is lowered for all
classes alike (the first k' draws of each class are kept) until the prompt fits.

Draws are reproducible: query ``key`` of ``stream`` always gets the same demonstrations for a given seed,
whatever the batch size or the order in which prompts are built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genomelm.errors import UsageError
from genomelm.tokenizer import SEP_ID, VOCAB

# Class i -> token i. Two classes as in the paper {A, N}; three as its {A, G, N}; then C, T.
DEFAULT_LABEL_TOKENS = {2: ("A", "N")}
_MULTICLASS_ORDER = ("A", "G", "N", "C", "T")
DEMO_OVERHEAD = 3  # [SEP] y [SEP] after each demonstration's bases
QUERY_OVERHEAD = 1  # [SEP] after the query's bases

# Independent random streams, so that e.g. test query 5 and tuning prompt 5 draw different demonstrations.
STREAM_TEST, STREAM_TRAIN, STREAM_TUNE, STREAM_DEV = 0, 1, 2, 3


@dataclass
class Prompt:
    """Token ids of one prompt and where its labels are predicted.

    ``label_positions`` are 0-based indices into ``ids`` whose next-token prediction is a label: the [SEP]
    before each demonstration's label, then the final [SEP] (the query's, always ``len(ids) - 1``).
    ``targets`` are the label token ids expected there (-1 where the query's label is unknown).
    """

    ids: np.ndarray  # (L,) int64
    label_positions: np.ndarray  # (m + 1,) int64
    targets: np.ndarray  # (m + 1,) int64
    shots: int  # demonstrations per class actually used

    def __len__(self) -> int:
        return len(self.ids)


def default_label_tokens(n_classes: int) -> list[str]:
    """The label token names for ``n_classes`` classes when --label-tokens is not given."""
    if n_classes in DEFAULT_LABEL_TOKENS:
        return list(DEFAULT_LABEL_TOKENS[n_classes])
    if 2 < n_classes <= len(_MULTICLASS_ORDER):
        return list(_MULTICLASS_ORDER[:n_classes])
    raise UsageError(
        f"{n_classes} classes: give --label-tokens with {n_classes} distinct vocabulary tokens "
        f"(e.g. {','.join(list(VOCAB)[:n_classes])})"
    )


def parse_label_tokens(spec: str | Sequence[str] | None, n_classes: int) -> list[int]:
    """Token ids for classes 0..C-1 from 'A,N' (names of tokenizer.VOCAB, e.g. A or [CLS]); None = defaults."""
    names = default_label_tokens(n_classes) if spec is None else _split_names(spec)
    unknown = [name for name in names if name not in VOCAB]
    if unknown:
        raise UsageError(f"--label-tokens: {', '.join(unknown)} not in the vocabulary ({', '.join(VOCAB)})")
    if len(set(names)) != len(names):
        raise UsageError(f"--label-tokens must be distinct, got {','.join(names)}")
    if len(names) != n_classes:
        raise UsageError(f"--label-tokens gives {len(names)} tokens for {n_classes} classes")
    return [VOCAB[name] for name in names]


def _split_names(spec: str | Sequence[str]) -> list[str]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [item.strip() for item in items if item.strip()]


def build_prompt(
    query: np.ndarray,
    demos: Sequence[tuple[np.ndarray, int]] = (),
    query_label: int | None = None,
    shots: int = 0,
) -> Prompt:
    """Assemble ``D_1 .. D_m Q`` (module docstring) from (bases ids, label token id) demonstrations, in order."""
    pieces: list[np.ndarray] = []
    positions, targets = [], []
    offset = 0
    for ids, token in demos:
        pieces += [np.asarray(ids, dtype=np.int64), np.array([SEP_ID, token, SEP_ID], dtype=np.int64)]
        positions.append(offset + len(ids))  # the [SEP] right before the label token
        targets.append(token)
        offset += len(ids) + DEMO_OVERHEAD
    pieces += [np.asarray(query, dtype=np.int64), np.array([SEP_ID], dtype=np.int64)]
    positions.append(offset + len(query))
    targets.append(-1 if query_label is None else query_label)
    return Prompt(np.concatenate(pieces), np.array(positions, np.int64), np.array(targets, np.int64), shots)


def prompt_length(demo_lengths: Sequence[int], query_length: int) -> int:
    """Tokens in a prompt with demonstrations of these base lengths and a query of ``query_length`` bases."""
    return sum(demo_lengths) + DEMO_OVERHEAD * len(demo_lengths) + query_length + QUERY_OVERHEAD


class DemoPool:
    """Labelled sequences grouped by class, from which demonstrations are drawn reproducibly.

    ``ids[i]`` are the token ids of row i, ``classes[i]`` its class index (0..C-1), ``label_ids[c]`` the label
    token of class c.
    """

    def __init__(self, ids: Sequence[np.ndarray], classes: Sequence[int], label_ids: Sequence[int], seed: int):
        self.ids = list(ids)
        self.label_ids = list(label_ids)
        self.seed = seed
        classes = np.asarray(classes, dtype=np.int64)
        self.lengths = np.array([len(i) for i in self.ids], dtype=np.int64)
        self.by_class = [np.flatnonzero(classes == c) for c in range(len(self.label_ids))]
        self.classes = classes

    @property
    def max_shots(self) -> int:
        """Most demonstrations per class that every class can supply."""
        return int(min(len(rows) for rows in self.by_class)) if self.by_class else 0

    def rng(self, stream: int, key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream, key])

    def draw(self, rng: np.random.Generator, shots: int, exclude: int | None = None) -> list[np.ndarray]:
        """Up to ``shots`` row indices per class, without replacement, never ``exclude`` (the query's row)."""
        draws = []
        for rows in self.by_class:
            size = min(shots + 1, len(rows))  # one spare, dropped again unless ``exclude`` was drawn
            picked = rng.choice(rows, size=size, replace=False) if size else rows[:0]
            draws.append(picked[picked != exclude][:shots])
        return draws

    def fit_shots(self, draws: list[np.ndarray], query_length: int, budget: int) -> int:
        """Largest k' <= the draws' k such that the first k' draws of every class plus the query fit ``budget``."""
        shots = min((len(d) for d in draws), default=0)
        while shots > 0:
            lengths = [int(self.lengths[row]) for d in draws for row in d[:shots]]
            if prompt_length(lengths, query_length) <= budget:
                break
            shots -= 1
        return shots

    def make_prompt(
        self,
        query: np.ndarray,
        shots: int,
        budget: int,
        stream: int,
        key: int,
        query_label: int | None = None,
        exclude: int | None = None,
    ) -> Prompt | None:
        """The prompt for one query with up to ``shots`` demonstrations per class, or None if even the bare
        query is longer than ``budget`` tokens."""
        if prompt_length([], len(query)) > budget:
            return None
        rng = self.rng(stream, key)
        draws = self.draw(rng, shots, exclude) if shots > 0 else []
        used = self.fit_shots(draws, len(query), budget) if draws else 0
        rows = [int(d[j]) for j in range(used) for d in draws]  # shot-major, class-minor, then shuffled
        rows = [rows[i] for i in rng.permutation(len(rows))]
        demos = [(self.ids[row], self.label_ids[self.classes[row]]) for row in rows]
        return build_prompt(query, demos, query_label, shots=used)
