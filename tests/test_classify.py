"""classify/: one MCC for finetune/predict (from probabilities) and in-context (from class indices)."""

import numpy as np
import pytest

from genomelm.classify.metrics import classification_metrics, confusion_matrix, mcc
from genomelm.formats.predictions import tsv_cell


def test_mcc_from_indices_equals_the_metrics_from_probabilities():
    rng = np.random.default_rng(3)
    true, predicted = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    probs = np.eye(3)[predicted]  # one-hot: argmax is the prediction
    assert mcc(true, predicted, 3) == classification_metrics(true, probs)["mcc"]


def test_confusion_matrix_rows_are_true_classes():
    confusion = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_mcc_is_zero_when_undefined_and_one_when_perfect():
    assert mcc(np.array([1, 1, 1]), np.array([1, 1, 1]), 2) == 0.0  # a constant marginal
    assert mcc(np.array([0, 1, 2]), np.array([0, 1, 2]), 3) == pytest.approx(1.0)


def test_tsv_cell_keeps_the_table_intact():
    assert tsv_cell("a\tb\nc\rd") == "a b c d"
    assert tsv_cell(7) == "7"
