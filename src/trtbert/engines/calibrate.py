"""Calibration for static int8: the texts, and the activation ranges every stage sees on them.

Where the texts come from (``trtbert build --int8``):

- ``--calibration-data FILE``: one text per line, or two tab-separated texts (a pair), as ``trtbert run --file``;
- ``--calibration-task TASK [--data-dir DIR]``: the first rows of the task's *train* split (the reported
  dev split stays unseen), from ``DIR``, ``$TRTBERT_GLUE_DIR`` or, for SST-2, the shipped sample;
- neither: the SST-2 sample shipped with trtbert (1,000 train rows of movie reviews), with a warning
  that the task's own texts calibrate better.

The ranges are measured by running the bundle's chain stage by stage over the tokenised texts (batches of
16, every layer, no early exit): each stage file's calibration graph (its fp32 graph, fused as it will be
built, with the tensors to quantise added as outputs) sees the hidden states the fp32 chain gives it,
so each layer is calibrated on what it will see in use. A file shared by several stages (ALBERT's one
layer) is calibrated over all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trtbert import bundle as B
from trtbert.engines.quantize import RangeObserver, with_outputs
from trtbert.errors import DataError, EngineError, first_line, ort_load_errors

log = logging.getLogger(__name__)

DEFAULT_ROWS = 256
BATCH = 16

TextInput = Any  # str | tuple[str, str]
Prepare = Callable[[Path], tuple[Path, list[str]]]  # source stage file -> (fp32 graph to run, tensors to measure)


@dataclass(frozen=True)
class CalibrationData:
    """Texts to calibrate on and where they came from (recorded in the engine set)."""

    texts: tuple[TextInput, ...]
    source: str

    def describe(self) -> dict[str, Any]:
        """What the manifest records: source, rows, method."""
        return {"source": self.source, "rows": len(self.texts), "method": "minmax"}


def calibration_data(data: Path | None = None, task: str | None = None, data_dir: Path | None = None,
                     limit: int = DEFAULT_ROWS) -> CalibrationData:
    """The calibration texts (see the module docstring for the order of sources)."""
    if limit < 1:
        raise DataError(f"calibration needs at least one row, got a limit of {limit}")
    if data is not None and task is not None:
        raise DataError("give --calibration-data or --calibration-task, not both")
    if data is not None:
        from trtbert.runtime.text import read_inputs

        texts = read_inputs(data)[:limit]
        return CalibrationData(tuple(texts), f"{Path(data).name} (first {len(texts)} rows)")
    from trtbert.data.glue import SAMPLE_GLUE, load_split, resolve_data_dir

    if task is None:
        examples = load_split("sst2", "train", SAMPLE_GLUE, limit=limit)
        log.warning("int8: calibrating on the SST-2 sample shipped with trtbert (%d rows); pass "
                    "--calibration-task TASK or --calibration-data FILE to calibrate on your task's texts",
                    len(examples))
        source = f"sst2 sample train (first {len(examples)} rows)"
    else:
        directory = resolve_data_dir(task, data_dir)
        examples = load_split(task, "train", directory, limit=limit)
        source = f"{task} train (first {len(examples)} rows)"
    texts = tuple(e.text_a if e.text_b is None else (e.text_a, e.text_b) for e in examples)
    if not texts:
        raise DataError(f"no calibration rows in {source}")
    return CalibrationData(texts, source)


def _session(graph: bytes, name: str) -> Any:
    import onnxruntime as ort

    from trtbert.engines.ort import OrtOptions, provider_list, session_options

    options = OrtOptions(optimization="disable", threads=0)
    try:
        return ort.InferenceSession(graph, sess_options=session_options(options), providers=provider_list(options))
    except ort_load_errors() as exc:
        raise EngineError(f"cannot run the calibration graph of {name}: {first_line(exc)}") from exc


def _order(manifest: B.Manifest) -> list[B.Stage]:
    """Stages in chain order: embeddings, then each layer followed by its separate head (if any)."""
    from trtbert.bundle.chain import steps

    stages = list(manifest.stages)
    order = [stages[0]]
    for step in steps(stages, manifest.exit_layers):
        order.append(stages[step.position])
        if step.head is not None:
            order.append(stages[step.head])
    order += [s for s in stages if s not in order]
    return order


def activation_ranges(bundle: B.Bundle, data: CalibrationData, prepare: Prepare,
                      batch: int = BATCH) -> dict[str, dict[str, tuple[float, float]]]:
    """``stage file -> tensor -> (low, high)`` for every distinct stage file of ``bundle``: ``prepare``
    gives each file's calibration graph and the tensors to measure."""
    from trtbert.runtime.text import TextEncoder

    manifest = bundle.manifest
    encoder = TextEncoder.from_bundle(bundle)
    batches = [encoder.encode(list(data.texts[i:i + batch])) for i in range(0, len(data.texts), batch)]
    table = np.load(bundle.path(B.WORD_EMBEDDINGS), mmap_mode="r")
    prepared: dict[str, tuple[Path, list[str]]] = {}
    observers: dict[str, RangeObserver] = {}
    for stage in manifest.stages:
        if stage.file not in prepared:
            prepared[stage.file] = prepare(bundle.path(stage.file))
            observers[stage.file] = RangeObserver(prepared[stage.file][1])
    hidden: list[np.ndarray | None] = [None] * len(batches)
    for stage in _order(manifest):
        graph, names = prepared[stage.file]
        session = _session(with_outputs(graph, names), stage.file)
        outputs = [o.name for o in session.get_outputs()]
        for i, enc in enumerate(batches):
            available = {B.INPUT_IDS: enc.input_ids, B.TOKEN_TYPE_IDS: enc.token_type_ids,
                         B.ATTENTION_MASK: enc.attention_mask, B.HIDDEN: hidden[i]}
            if stage.kind == B.EMBEDDINGS:
                available[B.INPUTS_EMBEDS] = np.ascontiguousarray(table[enc.input_ids])
            feeds = {t.name: available[t.name] for t in stage.inputs}
            values = dict(zip(outputs, session.run(outputs, feeds)))
            observers[stage.file].observe({**feeds, **values})
            if stage.kind == B.EMBEDDINGS:
                hidden[i] = values[B.HIDDEN]
            elif stage.kind == B.LAYER:
                hidden[i] = values[B.HIDDEN_OUT]
        del session
    log.info("calibrated %d stage files on %d rows (%s)", len(prepared), len(data.texts), data.source)
    return {file: observer.ranges() for file, observer in observers.items()}
