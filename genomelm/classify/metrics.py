"""The one implementation of the classification metrics (finetune, predict, in-context): accuracy, MCC
(multi-class: Gorodkin's R_K), macro F1, AUROC (Mann-Whitney U) and cross-entropy, plus the stderr table."""

from __future__ import annotations

import logging
import math

import numpy as np

from genomelm.log import get_logger

log = get_logger(__name__)


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """n, accuracy, MCC (multi-class: Gorodkin's R_K), macro F1 (over classes seen in labels or
    predictions), AUROC (binary: class 1 vs 0; multi-class: macro one-vs-rest) and cross-entropy loss.
    A metric that is undefined on this data (AUROC with one class present) is None."""
    labels = np.asarray(labels, dtype=np.int64)
    predicted = probs.argmax(axis=1)
    confusion = confusion_matrix(labels, predicted, probs.shape[1])
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    return {
        "n": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)) if len(labels) else None,
        "mcc": _mcc(confusion),
        "f1_macro": _f1_macro(confusion),
        "auroc": _auroc_any(labels, probs),
        "loss": float(-np.mean(np.log(picked))) if len(labels) else None,
    }


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts as float64: rows the true class, columns the predicted one (classes 0..K-1)."""
    confusion = np.zeros((n_classes, n_classes), dtype=np.float64)
    np.add.at(confusion, (true, predicted), 1)
    return confusion


def mcc(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """Matthews correlation for any number of classes (Gorodkin's R_K); 0 when undefined."""
    return _mcc(confusion_matrix(true, predicted, n_classes))


def _mcc(confusion: np.ndarray) -> float:
    """Matthews correlation from a K x K confusion matrix (0 when a marginal is constant)."""
    n, correct = confusion.sum(), np.trace(confusion)
    true, pred = confusion.sum(axis=1), confusion.sum(axis=0)
    numerator = correct * n - true @ pred
    denominator = math.sqrt((n * n - pred @ pred) * (n * n - true @ true))
    return float(numerator / denominator) if denominator > 0 else 0.0


def _f1_macro(confusion: np.ndarray) -> float:
    tp = np.diag(confusion)
    true, pred = confusion.sum(axis=1), confusion.sum(axis=0)
    present = (true + pred) > 0
    f1 = np.divide(2 * tp, true + pred, out=np.zeros_like(tp), where=(true + pred) > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def _auroc_any(labels: np.ndarray, probs: np.ndarray) -> float | None:
    if probs.shape[1] == 2:
        return auroc(probs[:, 1], labels == 1)
    scores = [auroc(probs[:, c], labels == c) for c in range(probs.shape[1])]
    scores = [s for s in scores if s is not None]
    return float(np.mean(scores)) if scores else None


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); None without both classes."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]  # 1-based average ranks
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def format_metric(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def report_table(columns: dict[str, dict | None], classes: list[str]) -> None:
    """A rich table on stderr (skipped with --quiet): one column of metrics per named dataset."""
    if not log.isEnabledFor(logging.INFO):  # --quiet keeps warnings only
        return
    from rich.console import Console
    from rich.table import Table

    columns = {name: m for name, m in columns.items() if m is not None}
    table = Table(title=f"metrics, {len(classes)} classes")
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    for key in ("n", "accuracy", "mcc", "f1_macro", "auroc", "loss"):
        table.add_row(key, *[str(m[key]) if key == "n" else format_metric(m[key]) for m in columns.values()])
    Console(stderr=True).print(table)
