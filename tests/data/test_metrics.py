"""Metrics against hand-computed values and against scikit-learn and scipy (the device has neither)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trtbert.data import get_task, main_score, score
from trtbert.data.metrics import accuracy, f1, matthews, pearson, rankdata, spearman
from trtbert.errors import DataError


def test_accuracy_in_points() -> None:
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 50.0


def test_f1_positive_class() -> None:
    # tp=2, fp=1, fn=1 -> 2*2 / (4 + 1 + 1) = 2/3
    assert f1([1, 1, 1, 0, 0], [1, 1, 0, 1, 0]) == pytest.approx(200 / 3)
    assert f1([0, 0], [1, 0]) == 0.0


def test_matthews_binary_by_hand() -> None:
    # tp=2 tn=1 fp=1 fn=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert matthews([1, 1, 1, 0, 0], [1, 1, 0, 1, 0]) == pytest.approx(100 / 6)
    assert matthews([1, 1, 1], [1, 0, 1]) == 0.0  # constant prediction
    assert matthews([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(100.0)


def test_matthews_multiclass_by_hand() -> None:
    y, p = [0, 1, 2, 0], [0, 1, 1, 0]
    # c=3, s=4, t=(2,1,1), p=(2,2,0): (3*4 - (4+2+0)) / sqrt((16-8)*(16-6)) = 6/sqrt(80)
    assert matthews(p, y) == pytest.approx(100 * 6 / math.sqrt(80))


def test_pearson_and_spearman_with_ties() -> None:
    # dx=(-1,0,1), dy=(-13,-1,14)/6: cov 4.5, sum dx^2 2, sum dy^2 61/6
    assert pearson([1, 2, 3], [2, 4, 6.5]) == pytest.approx(100 * 4.5 / math.sqrt(2 * 61 / 6))
    assert rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    # ranks x=(1,2.5,2.5,4) y=(1,2,3,4): cov 4.5, var 4.5 and 5 -> 4.5 / sqrt(22.5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(100 * 4.5 / math.sqrt(22.5))
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-100.0)
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_task_scores_from_logits() -> None:
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert score("mrpc", logits, [1, 0, 0]) == {"f1": pytest.approx(200 / 3), "accuracy": pytest.approx(200 / 3)}
    assert main_score("cola", logits, [1, 0, 1]) == pytest.approx(100.0)
    stsb = score("stsb", np.array([[1.0], [2.0], [3.0]]), [0.5, 2.0, 4.0])
    assert stsb["spearman"] == pytest.approx(100.0) and get_task("stsb").metric == "pearson"


def test_shape_mismatch() -> None:
    with pytest.raises(DataError, match="same length"):
        accuracy([1, 0], [1])


@pytest.mark.parametrize("seed", range(5))
def test_metrics_agree_with_scikit_learn_and_scipy(seed: int) -> None:
    """The numpy metrics (the device has no scipy) against the reference implementations."""
    scipy_stats = pytest.importorskip("scipy.stats")
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    yb, pb = y % 2, p % 2
    assert accuracy(p, y) == pytest.approx(100 * sk.accuracy_score(y, p))
    assert f1(pb, yb) == pytest.approx(100 * sk.f1_score(yb, pb))
    assert matthews(p, y) == pytest.approx(100 * sk.matthews_corrcoef(y, p))
    assert matthews(pb, yb) == pytest.approx(100 * sk.matthews_corrcoef(yb, pb))
    a, b = rng.normal(size=300), rng.integers(0, 6, 300).astype(float)  # ties in b
    assert pearson(a, b) == pytest.approx(100 * scipy_stats.pearsonr(a, b)[0])
    assert spearman(a, b) == pytest.approx(100 * scipy_stats.spearmanr(a, b)[0])
    assert rankdata(b).tolist() == pytest.approx(scipy_stats.rankdata(b).tolist())
