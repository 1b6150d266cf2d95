"""GLUE readers: the standard ``glue_data/<TASK>/{train,dev}.tsv`` layout, or HF ``datasets`` online.

Files are read as GLUE's own scripts do: tab-separated, UTF-8, quoting off (GLUE files hold stray
quotes), columns picked by header name (CoLA has no header: source, label, original label, sentence).
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from trtbert.data.tasks import Task, get_task
from trtbert.errors import DataError, first_line

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "dev_matched", "dev_mismatched")
_SPLIT_ALIASES = {"validation": "dev", "validation_matched": "dev_matched", "validation_mismatched": "dev_mismatched"}
_HF_SPLITS = {"train": "train", "dev": "validation", "dev_matched": "validation_matched",
              "dev_mismatched": "validation_mismatched"}
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
SST2_SAMPLE = SAMPLES_DIR / "sst2_sample.tsv"  # 64 rows of SST-2 dev, GLUE format (with header)
SAMPLE_GLUE = SAMPLES_DIR / "glue"  # SST-2 only: 1,000 train rows and 200 dev rows (see its README)
GLUE_ENV = "TRTBERT_GLUE_DIR"
HF_DATASET = "nyu-mll/glue"


def resolve_data_dir(task: Task | str, data_dir: str | Path | None) -> Path | None:
    """Where a task's TSV files are read from: ``data_dir``, else ``$TRTBERT_GLUE_DIR``, else the shipped
    sample (SST-2 only; said in a warning), else None (Hugging Face ``datasets``, needs network)."""
    task = get_task(task) if isinstance(task, str) else task
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(GLUE_ENV)
    if env:
        return Path(env).expanduser()
    if (SAMPLE_GLUE / task.directory).is_dir():
        log.warning("no --data-dir (or $%s): using the SST-2 sample shipped with trtbert (%s: 1,000 train and "
                    "200 dev rows); pass --data-dir glue_data/ for the full task", GLUE_ENV, SAMPLE_GLUE)
        return SAMPLE_GLUE
    return None


@dataclass(frozen=True)
class Example:
    """One labelled example. ``label`` is a label id, or a float score for regression (STS-B).

    ``line`` is the 1-based line number in the source file (the row number for HF datasets).
    """

    text_a: str
    text_b: str | None
    label: int | float
    line: int


def resolve_split(task: Task, split: str) -> str:
    """The file stem a split name means for ``task`` (``dev`` on MNLI is ``dev_matched``)."""
    name = _SPLIT_ALIASES.get(split.strip().lower(), split.strip().lower())
    if name not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if name == "dev":
        return task.dev_split
    if name.startswith("dev_") and task.directory != "MNLI":
        raise DataError(f"split {split!r} exists only for MNLI; use 'dev' for {task.name}")
    return name


def split_path(task: Task | str, split: str, data_dir: str | Path) -> Path:
    """``<data_dir>/<TASK>/<split>.tsv`` for a task and split name."""
    task = get_task(task) if isinstance(task, str) else task
    return Path(data_dir).expanduser() / task.directory / f"{resolve_split(task, split)}.tsv"


def load_split(task: Task | str, split: str, data_dir: str | Path | None = None,
               limit: int | None = None, dataset: str = HF_DATASET) -> list[Example]:
    """Examples of one GLUE split, in file order (the first ``limit`` rows when given).

    With ``data_dir``: reads ``<data_dir>/<TASK>/<split>.tsv``. Without: downloads ``dataset`` from
    Hugging Face ``datasets`` (needs the ``datasets`` extra and network). Split ``dev`` on MNLI means
    ``dev_matched`` (task ``mnli-mm`` maps it to ``dev_mismatched``).
    """
    task = get_task(task) if isinstance(task, str) else task
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of rows, got {limit}")
    if data_dir is None:
        return _load_hf(task, resolve_split(task, split), limit, dataset)
    path = split_path(task, split, data_dir)
    if not path.is_file():
        raise DataError(
            f"{path} not found; expected the GLUE layout <data_dir>/{task.directory}/"
            f"{{train,{task.dev_split}}}.tsv (as written by GLUE's download_glue_data.py)"
        )
    return read_tsv(task, path, limit)


def read_tsv(task: Task | str, path: str | Path, limit: int | None = None) -> list[Example]:
    """Examples of one GLUE-format TSV file of ``task`` (e.g. :data:`SST2_SAMPLE`)."""
    task = get_task(task) if isinstance(task, str) else task
    path = Path(path)
    examples: list[Example] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:  # GLUE's own files may start with a BOM
            rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            if task.header:
                header = next(rows, None)
                if header is None:
                    raise DataError(f"{path} is empty; expected a header line for {task.name}")
                cols = _columns(task, header, path)
                first = 2
            else:
                cols = (int(task.text_a), None if task.text_b is None else int(task.text_b), int(task.label))
                header, first = None, 1
            width = len(header) if header is not None else 4
            for line, row in enumerate(rows, start=first):
                if not row or row == [""]:
                    continue
                if len(row) != width:
                    raise DataError(f"{path}:{line}: expected {width} tab-separated fields, found {len(row)}")
                examples.append(_example(task, row, cols, path, line))
                if limit is not None and len(examples) >= limit:
                    break
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    log.info("read %d %s examples from %s", len(examples), task.name, path)
    return examples


def _columns(task: Task, header: list[str], path: Path) -> tuple[int, int | None, int]:
    wanted = [task.text_a, task.text_b, task.label]
    found: list[int | None] = []
    for name in wanted:
        if name is None:
            found.append(None)
            continue
        if name not in header:
            raise DataError(
                f"{path}:1: header has no column {name!r} for {task.name} "
                f"(found: {', '.join(header)}); is this the right task's file?"
            )
        found.append(header.index(str(name)))
    a, b, y = found
    assert a is not None and y is not None
    return a, b, y


def _example(task: Task, row: list[str], cols: tuple[int, int | None, int], path: Path, line: int) -> Example:
    a, b, y = cols
    raw = row[y].strip()
    label: int | float
    if task.is_regression:
        try:
            label = float(raw)
        except ValueError:
            raise DataError(f"{path}:{line}: score {raw!r} is not a number") from None
    else:
        found = task.label_id(raw)
        if found is None:
            known = ", ".join(value for value, _ in task.label_values)
            raise DataError(f"{path}:{line}: label {raw!r} is not a {task.name} label (expected one of {known})")
        label = found
    return Example(row[a], None if b is None else row[b], label, line)


def _load_hf(task: Task, split: str, limit: int | None, dataset: str = HF_DATASET) -> list[Example]:
    """GLUE from Hugging Face ``datasets`` (optional dependency, needs network)."""
    hint = "download GLUE (glue_data/<TASK>/*.tsv) and pass --data-dir (or set $TRTBERT_GLUE_DIR)"
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise DataError(f"no --data-dir given and the 'datasets' package is not installed; {hint}") from None
    hf_split = _HF_SPLITS[split]
    try:
        ds = datasets.load_dataset(dataset, task.hf_config, split=hf_split)
    except (OSError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise DataError(f"cannot load {dataset} {task.hf_config}/{hf_split} from the Hugging Face Hub "
                        f"({first_line(exc)}); {hint}") from exc
    col_a, col_b = task.hf_columns
    examples = []
    for i, row in enumerate(ds, start=1):
        label = float(row["label"]) if task.is_regression else int(row["label"])
        examples.append(Example(row[col_a], None if col_b is None else row[col_b], label, i))
        if limit is not None and len(examples) >= limit:
            break
    return examples
