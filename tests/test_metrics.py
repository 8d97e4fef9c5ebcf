"""Metrics agree with scikit-learn and with hand-computed values."""
import numpy as np
from sklearn.metrics import f1_score

from hw5.metrics import classification_metrics, subset_accuracy


def test_known_inputs():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == 4 / 6
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    assert np.isclose(m["uar"], (2 / 3 + 1 / 2 + 1) / 3)
    assert np.isclose(m["macro_f1"], f1_score(y_true, y_pred, average="macro"))
    assert np.isclose(m["weighted_f1"], f1_score(y_true, y_pred, average="weighted"))
    assert "a" in m["report"] and m["n"] == 6


def test_absent_class_counts_as_zero_support():
    m = classification_metrics(np.array([0, 0]), np.array([0, 1]), ["a", "b", "c"])
    assert m["per_class"]["c"]["support"] == 0 and len(m["confusion_matrix"]) == 3


def test_subset_accuracy():
    assert subset_accuracy(np.array([0, 1, 2]), np.array([0, 0, 2]), [True, True, False]) == {"accuracy": 0.5, "n": 2}
    assert subset_accuracy(np.array([0]), np.array([0]), [False]) == {"accuracy": None, "n": 0}
