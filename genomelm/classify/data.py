"""Labelled sequences as token ids: a tokenised split, length fitting (truncation), right-padded batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genomelm.errors import InputError, UsageError
from genomelm.formats.labels import LabelledRecord, class_index
from genomelm.log import get_logger
from genomelm.runtime import pad_right
from genomelm.tokenizer import PAD_ID, SEP_ID, CharTokenizer, reverse_complement_ids

log = get_logger(__name__)


@dataclass
class Dataset:
    """Tokenised split: base ids without [SEP] (each (L_i,)), class indices (N,), and record ids."""

    name: str
    ids: list[np.ndarray]
    labels: np.ndarray
    record_ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def max_input_length(requested: int | None, l_max: int) -> int:
    """Longest input in bases: l_max minus one position for the [SEP] every sequence ends with."""
    capacity = l_max - 1
    if requested is not None and requested > capacity:
        raise UsageError(f"--max-length {requested} is longer than the model takes ({capacity} bases + [SEP])")
    return requested or capacity


def encode_split(
    name: str, records: list[LabelledRecord], classes: list[str], max_length: int, truncate: str, path: str
) -> Dataset:
    """Tokenise and index one split; labels outside ``classes`` and too-long sequences are InputErrors."""
    indices = np.asarray(class_index((r.label for r in records), classes), dtype=np.int64)
    unseen = sorted({r.label for r, i in zip(records, indices) if i < 0})
    if unseen:
        shown = ", ".join(repr(x) for x in unseen[:5]) + (" ..." if len(unseen) > 5 else "")
        raise InputError(f"{path}: label(s) {shown} not among the training classes ({', '.join(classes)})")
    tokenizer = CharTokenizer()
    ids = [fit_length(tokenizer.encode(r.sequence, record=r.where), max_length, truncate, r.where) for r in records]
    return Dataset(name, ids, indices, [r.id for r in records])


def fit_length(ids: np.ndarray, max_length: int, truncate: str, where: str) -> np.ndarray:
    """``ids`` cut to ``max_length``: 'left' drops the start, 'right' drops the end, 'error' refuses."""
    if len(ids) <= max_length:
        return ids
    if truncate == "left":
        return ids[-max_length:]
    if truncate == "right":
        return ids[:max_length]
    raise InputError(
        f"{where}: sequence of {len(ids):,} bases is longer than the maximum {max_length:,}; "
        "use --truncate left|right to cut it, or a model with a longer context"
    )


def to_batch(rows: list[np.ndarray], device: torch.device, add_sep: bool = True, reverse=None):
    """(B, L) right-padded token ids (each row + [SEP]) and (B,) lengths; ``reverse[i]`` flips row i's strand."""
    sep = np.array([SEP_ID], dtype=np.int64)
    out = []
    for i, row in enumerate(rows):
        row = reverse_complement_ids(row) if reverse is not None and reverse[i] else row
        out.append(np.concatenate([row, sep]) if add_sep else row)
    return pad_right(out, PAD_ID, device)
