"""The task registry: HF label order, problem types, metrics, names."""

from __future__ import annotations

import pytest

from trtbert.data import REGRESSION, TASKS, get_task


def test_hf_label_order() -> None:
    assert get_task("mnli").labels == ("entailment", "neutral", "contradiction")
    assert get_task("cola").labels == ("unacceptable", "acceptable")
    assert get_task("sst2").labels == ("negative", "positive")
    assert get_task("wnli").labels == ("not_entailment", "entailment")
    assert get_task("qnli").id2label == {0: "entailment", 1: "not_entailment"}


@pytest.mark.parametrize("name", ["SST-2", "sst2", "Sst-2", "CoLA", "STS-B", "mnli-mm", "MNLI"])
def test_names_case_insensitive(name: str) -> None:
    assert get_task(name).name in TASKS


def test_problem_types_and_metrics() -> None:
    stsb = get_task("sts-b")
    assert stsb.problem_type == REGRESSION and stsb.num_labels == 1 and stsb.metrics == ("pearson", "spearman")
    assert get_task("cola").metric == "matthews"
    assert get_task("qqp").metric == "f1" and get_task("mrpc").metrics == ("f1", "accuracy")
    assert get_task("mnli").num_labels == 3 and get_task("mnli-mm").dev_split == "dev_mismatched"
