"""GLUE data and metrics, numpy only (no torch): used by ``train`` and by ``eval`` on devices.

- :func:`load_split` / :func:`read_tsv` give :class:`Example` rows;
- :func:`get_task` / :data:`TASKS` give each task's labels, problem type and metric;
- :func:`score` / :func:`main_score` compute the GLUE metric in points (x100).
"""

from __future__ import annotations

from trtbert.data.glue import (
    SAMPLE_GLUE,
    SPLITS,
    SST2_SAMPLE,
    Example,
    load_split,
    read_tsv,
    resolve_data_dir,
    resolve_split,
    split_path,
)
from trtbert.data.metrics import main_score, predictions_from_logits, score
from trtbert.data.tasks import CLASSIFICATION, REGRESSION, TASKS, Task, get_task, task_names

__all__ = [
    "CLASSIFICATION", "REGRESSION", "SAMPLE_GLUE", "SPLITS", "SST2_SAMPLE", "TASKS", "Example", "Task", "get_task",
    "load_split", "main_score", "predictions_from_logits", "read_tsv", "resolve_data_dir", "resolve_split", "score",
    "split_path", "task_names",
]
