"""In-context readouts: the class from the logits after each query (argmax over the label tokens, or over
the whole vocabulary as the HyenaDNA paper scores it), their accuracy and MCC, and the text table."""

from __future__ import annotations

import numpy as np

from genomelm.classify.metrics import mcc
from genomelm.tokenizer import VOCAB, VOCAB_SIZE

TOKEN_NAMES = list(VOCAB)


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
