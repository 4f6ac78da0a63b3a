"""Outputs of `genomelm in-context`: metrics (accuracy, MCC), predictions TSV, soft prompt files.

Soft prompt file (``prompt.safetensors``): one tensor ``prompt`` (P, D) fp32, and string metadata:
format ``genomelm-soft-prompt``, format_version, n_tokens, d_model, classes (JSON list, class-index order),
label_tokens (JSON list of vocabulary names), shots, model, model_fingerprint, genomelm_version.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from genomelm import __version__
from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats import atomic
from genomelm.formats.checkpoint import check_finite
from genomelm.log import get_logger
from genomelm.model.lm import HyenaDNA
from genomelm.model.prompt import SoftPrompt
from genomelm.tokenizer import VOCAB, VOCAB_SIZE

log = get_logger(__name__)

TOKEN_NAMES = list(VOCAB)
PROMPT_FORMAT = "genomelm-soft-prompt"
PROMPT_FORMAT_VERSION = 1


# --------------------------------------------------------------------------- metrics


def mcc(true: np.ndarray, pred: np.ndarray, n_labels: int) -> float:
    """Matthews correlation for any number of classes (Gorodkin's R_K); 0 when undefined."""
    confusion = np.zeros((n_labels, n_labels), dtype=np.float64)
    np.add.at(confusion, (true, pred), 1)
    total, correct = confusion.sum(), np.trace(confusion)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    numerator = correct * total - predicted @ actual
    denominator = math.sqrt((total**2 - predicted @ predicted) * (total**2 - actual @ actual))
    return float(numerator / denominator) if denominator > 0 else 0.0


def readouts(logits: np.ndarray, label_ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From (n, VOCAB_SIZE) logits after each query (NaN rows: no prediction), per row:
    the class by argmax over the label tokens, the class by argmax over the whole vocabulary (C when that
    token is not a label token), and the (n, C) probabilities over the label tokens. Missing rows: -1 / NaN."""
    done = ~np.isnan(logits).any(axis=1)
    label_logits = np.where(done[:, None], logits[:, label_ids], 0.0)  # (n, C)
    shifted = np.exp(label_logits - label_logits.max(axis=1, keepdims=True))
    probs = np.where(done[:, None], shifted / shifted.sum(axis=1, keepdims=True), np.nan)
    by_label = np.where(done, label_logits.argmax(axis=1), -1)
    token_to_class = np.full(VOCAB_SIZE, len(label_ids), dtype=np.int64)
    token_to_class[label_ids] = np.arange(len(label_ids))
    by_vocab = np.where(done, token_to_class[np.nan_to_num(logits, nan=0).argmax(axis=1)], -1)
    return by_label, by_vocab, probs


def scores(true: np.ndarray, by_label: np.ndarray, by_vocab: np.ndarray, n_classes: int) -> dict | None:
    """Accuracy and MCC of both readouts over the rows with a prediction and a known class (true >= 0)."""
    scored = (true >= 0) & (by_label >= 0)
    if not scored.any():
        return None
    true = true[scored]
    return {
        "rows": int(scored.sum()),
        "label_tokens": {
            "accuracy": float(np.mean(by_label[scored] == true)),
            "mcc": mcc(true, by_label[scored], n_classes),
        },
        "vocabulary": {  # a token outside the label tokens is one more (always wrong) class
            "accuracy": float(np.mean(by_vocab[scored] == true)),
            "mcc": mcc(true, by_vocab[scored], n_classes + 1),
        },
    }


def format_table(report: dict) -> str:
    """The metrics as a small text table (the CLI prints it to stderr)."""
    head = (
        f"in-context {report['method']}: model {report['model']}, P={report['soft_prompt_tokens']}, "
        f"k={report['shots']['requested']}; {report['test']['predicted']}/{report['test']['rows']} predicted"
    )
    metrics = report["metrics"]
    if metrics is None:
        return head + "\n(no test labels: predictions only)"
    labels = ",".join(report["label_tokens"])
    lines = [head, f"{'prediction over':<28}{'accuracy':>10}{'MCC':>10}"]
    for name, key in ((f"label tokens ({labels})", "label_tokens"), ("whole vocabulary", "vocabulary")):
        lines.append(f"{name:<28}{metrics[key]['accuracy']:>10.4f}{metrics[key]['mcc']:>10.4f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- files


def atomic_write(path: Path, write: Callable) -> None:
    """Write a text file through a temporary file in the same directory, renamed on success."""
    with atomic.atomic_file(path, "w", encoding="utf-8", newline="") as handle:
        write(handle)


def write_predictions(handle, rows: list[dict], classes: list[str], has_labels: bool) -> None:
    """TSV in input order: id, predicted (label-token argmax), predicted_token (whole-vocabulary argmax),
    prob_<class> (softmax over the label tokens), shots (per class), label (inputs with labels), flag ('.'
    or why the record got no prediction). Missing values are 'NA'."""
    columns = ["id", "predicted", "predicted_token"] + [f"prob_{_clean(c)}" for c in classes] + ["shots"]
    columns += (["label"] if has_labels else []) + ["flag"]
    handle.write("\t".join(columns) + "\n")
    for row in rows:
        fields = [_clean(row["id"]), row["predicted"], row["predicted_token"]]
        fields += [f"{p:.6g}" if not math.isnan(p) else "NA" for p in row["probs"]] + [row["shots"]]
        fields += ([_clean(row["label"] or "NA")] if has_labels else []) + [_clean(row["flag"])]
        handle.write("\t".join(fields) + "\n")


def _clean(text: str) -> str:
    """One TSV cell: tabs and newlines would break the table."""
    return str(text).replace("\t", " ").replace("\n", " ").replace("\r", " ")


def write_json(path: Path, value: dict) -> None:
    atomic_write(path, lambda h: h.write(json.dumps(value, indent=2) + "\n"))


# --------------------------------------------------------------------------- soft prompt files


def model_fingerprint(model: HyenaDNA) -> str:
    """A short hash of the token embeddings: tells whether a prompt meets the model it was trained for."""
    weight = model.backbone.embeddings.word_embeddings.weight.detach().float().cpu().contiguous()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()[:16]


def save_prompt(path: Path, prompt: SoftPrompt, model: HyenaDNA, info: dict) -> None:
    """Write a trained prompt atomically; ``info`` gives classes, label_tokens (names), shots and model."""
    from safetensors.torch import save_file

    metadata = {
        "format": PROMPT_FORMAT,
        "format_version": str(PROMPT_FORMAT_VERSION),
        "n_tokens": str(prompt.n_tokens),
        "d_model": str(model.config.d_model),
        "classes": json.dumps(info["classes"]),
        "label_tokens": json.dumps(info["label_tokens"]),
        "shots": str(info["shots"]),
        "model": str(info["model"]),
        "model_fingerprint": model_fingerprint(model),
        "genomelm_version": __version__,
    }
    with atomic.atomic_path(path) as tmp:
        save_file({"prompt": prompt.weight.detach().float().cpu().contiguous()}, tmp, metadata=metadata)


def load_prompt(path: str, model: HyenaDNA) -> tuple[SoftPrompt, dict]:
    """A prompt written by ``save_prompt``, checked against ``model``; returns it (eval mode) and its
    metadata: classes (list), label_tokens (list of names), shots (int)."""
    meta, weight = _read_prompt_file(path)
    check_finite({"prompt": weight}, path)
    if weight.shape[1] != model.config.d_model:
        raise UsageError(
            f"--prompt {path}: width {weight.shape[1]} does not match the model's d_model {model.config.d_model}"
        )
    if meta.get("model_fingerprint") != model_fingerprint(model):
        log.warning("--prompt %s was trained with another model (%s)", path, meta.get("model"))
    prompt = SoftPrompt(weight.shape[0], weight.shape[1])
    with torch.no_grad():
        prompt.weight.copy_(weight)
    try:
        info = {
            "classes": json.loads(meta["classes"]),
            "label_tokens": json.loads(meta["label_tokens"]),
            "shots": int(meta.get("shots", 0)),
        }
    except (KeyError, ValueError) as exc:
        raise FormatError(f"--prompt {path}: damaged metadata ({exc})") from None
    return prompt.eval(), info


def _read_prompt_file(path: str) -> tuple[dict, torch.Tensor]:
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise InputError(f"--prompt {path}: no such file")
    try:
        with safe_open(path, framework="pt") as handle:
            meta, weight = handle.metadata() or {}, handle.get_tensor("prompt")
    except Exception as exc:  # safetensors raises its own error types for a damaged file or a missing tensor
        raise FormatError(f"--prompt {path}: not a genomelm soft prompt ({_first_line(exc)})") from None
    if meta.get("format") != PROMPT_FORMAT or weight.ndim != 2:
        raise FormatError(f"--prompt {path}: not a genomelm soft prompt (format {meta.get('format')!r})")
    return meta, weight.float()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
