"""The GLUE task registry: labels, problem type, file layout and metric of each task.

Label order follows Hugging Face ``datasets`` (``nyu-mll/glue``), so checkpoints fine-tuned on HF's
GLUE line up with this package's label ids. Note MNLI: ``entailment`` 0, ``neutral`` 1,
``contradiction`` 2 (HF's order, not the alphabetical order some GLUE scripts use).
"""

from __future__ import annotations

from dataclasses import dataclass

from trtbert.bundle.manifest import CLASSIFICATION, REGRESSION
from trtbert.errors import DataError


@dataclass(frozen=True)
class Task:
    """One GLUE task: where its files are, which columns hold what, and how it is scored.

    ``text_a``/``text_b``/``label`` are column names for files with a header, or 0-based column
    indices for headerless files (CoLA). ``label_values`` maps the raw TSV label text to a label id.
    """

    name: str  # canonical lower-case name: "cola", "sst2", ...
    directory: str  # GLUE folder: "CoLA", "SST-2", ...
    labels: tuple[str, ...]  # label names in id order; () for regression
    problem_type: str
    metric: str  # the main metric (a key of the dict returned by trtbert.data.metrics.score)
    metrics: tuple[str, ...]  # every metric reported
    text_a: str | int
    text_b: str | int | None
    label: str | int
    header: bool = True
    label_values: tuple[tuple[str, int], ...] = ()  # raw TSV label -> id
    dev_split: str = "dev"  # the file "dev" means (MNLI: dev_matched)
    hf_config: str = ""  # config name in HF datasets nyu-mll/glue
    hf_columns: tuple[str, str | None] = ("sentence", None)

    @property
    def num_labels(self) -> int:
        """Output width of a model for this task (1 for regression)."""
        return len(self.labels) if self.labels else 1

    @property
    def is_regression(self) -> bool:
        """True for STS-B."""
        return self.problem_type == REGRESSION

    @property
    def id2label(self) -> dict[int, str]:
        """``{0: "negative", 1: "positive"}`` for a transformers config (``{0: "score"}`` for regression)."""
        return dict(enumerate(self.labels)) if self.labels else {0: "score"}

    @property
    def label2id(self) -> dict[str, int]:
        """Inverse of :attr:`id2label`."""
        return {name: i for i, name in self.id2label.items()}

    def label_id(self, raw: str) -> int | None:
        """The label id of a raw TSV label, or None if it is not one of the task's labels."""
        return dict(self.label_values).get(raw)


def _numeric(n: int) -> tuple[tuple[str, int], ...]:
    return tuple((str(i), i) for i in range(n))


def _named(*names: str) -> tuple[tuple[str, int], ...]:
    return tuple((name, i) for i, name in enumerate(names))


_ACC = ("accuracy",)
_F1_ACC = ("f1", "accuracy")

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("cola", "CoLA", ("unacceptable", "acceptable"), CLASSIFICATION, "matthews", ("matthews",),
             text_a=3, text_b=None, label=1, header=False, label_values=_numeric(2), hf_config="cola"),
        Task("sst2", "SST-2", ("negative", "positive"), CLASSIFICATION, "accuracy", _ACC,
             text_a="sentence", text_b=None, label="label", label_values=_numeric(2), hf_config="sst2"),
        Task("mrpc", "MRPC", ("not_equivalent", "equivalent"), CLASSIFICATION, "f1", _F1_ACC,
             text_a="#1 String", text_b="#2 String", label="Quality", label_values=_numeric(2),
             hf_config="mrpc", hf_columns=("sentence1", "sentence2")),
        Task("stsb", "STS-B", (), REGRESSION, "pearson", ("pearson", "spearman"),
             text_a="sentence1", text_b="sentence2", label="score",
             hf_config="stsb", hf_columns=("sentence1", "sentence2")),
        Task("qqp", "QQP", ("not_duplicate", "duplicate"), CLASSIFICATION, "f1", _F1_ACC,
             text_a="question1", text_b="question2", label="is_duplicate", label_values=_numeric(2),
             hf_config="qqp", hf_columns=("question1", "question2")),
        Task("mnli", "MNLI", ("entailment", "neutral", "contradiction"), CLASSIFICATION, "accuracy", _ACC,
             text_a="sentence1", text_b="sentence2", label="gold_label",
             label_values=_named("entailment", "neutral", "contradiction"), dev_split="dev_matched",
             hf_config="mnli", hf_columns=("premise", "hypothesis")),
        Task("mnli-mm", "MNLI", ("entailment", "neutral", "contradiction"), CLASSIFICATION, "accuracy", _ACC,
             text_a="sentence1", text_b="sentence2", label="gold_label",
             label_values=_named("entailment", "neutral", "contradiction"), dev_split="dev_mismatched",
             hf_config="mnli", hf_columns=("premise", "hypothesis")),
        Task("qnli", "QNLI", ("entailment", "not_entailment"), CLASSIFICATION, "accuracy", _ACC,
             text_a="question", text_b="sentence", label="label",
             label_values=_named("entailment", "not_entailment"),
             hf_config="qnli", hf_columns=("question", "sentence")),
        Task("rte", "RTE", ("entailment", "not_entailment"), CLASSIFICATION, "accuracy", _ACC,
             text_a="sentence1", text_b="sentence2", label="label",
             label_values=_named("entailment", "not_entailment"),
             hf_config="rte", hf_columns=("sentence1", "sentence2")),
        # WNLI's TSV labels are 0/1 with 1 = entailment, which is also HF's order.
        Task("wnli", "WNLI", ("not_entailment", "entailment"), CLASSIFICATION, "accuracy", _ACC,
             text_a="sentence1", text_b="sentence2", label="label", label_values=_numeric(2),
             hf_config="wnli", hf_columns=("sentence1", "sentence2")),
    )
}

_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli_matched": "mnli",
            "mnli_mismatched": "mnli-mm", "mnli-mismatched": "mnli-mm", "mnli-matched": "mnli"}


def task_names() -> list[str]:
    """Canonical task names, in registry order."""
    return list(TASKS)


def get_task(name: str) -> Task:
    """The task called ``name`` (case-insensitive; ``SST-2``, ``sst2``, ``MNLI-mm`` ...)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return TASKS[key]
    except KeyError:
        raise DataError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None
