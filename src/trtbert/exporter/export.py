"""``trtbert export``: split a classifier into per-layer ONNX stages, validate them, write a bundle.

The export is built in a temporary directory beside the output and renamed into place only after
every stage and the whole chain passed validation, so an interrupted or failed export leaves nothing
that looks like a bundle (and the next writer removes what a killed one left).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtbert import __version__
from trtbert import bundle as B
from trtbert import faults
from trtbert.errors import ExportError, ModelError, UsageError, missing_extra
from trtbert.exporter.writer import StageReport

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17  # LayerNormalization as one op (kept in fp32 by TensorRT builds)
MIN_OPSET = 14
# Files a checkpoint directory holds when it has a tokenizer (any family).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how. ``exits``: ``all``, ``none`` or 1-based layers such as ``(3, 6, 9)``.

    ``tolerance``: the largest difference against PyTorch a stage may have (None: the family's own,
    :attr:`ArchSpec.tolerance`). ``tokenizer``: a directory or hub id when the checkpoint has none.
    """

    model: str
    out: Path
    opset: int = DEFAULT_OPSET
    exits: str | tuple[int, ...] = "all"
    overwrite: bool = False
    tolerance: float | None = None
    tokenizer: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tolerance is not None and not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise UsageError(f"--tolerance must be a number >= 0, got {self.tolerance}")


@dataclass(frozen=True)
class ExportResult:
    """What ``export_bundle`` wrote and measured."""

    bundle: Path
    stages: tuple[StageReport, ...]
    exit_layers: tuple[int, ...]
    chain_diffs: dict[int, float]
    seconds: float
    total_bytes: int
    notes: tuple[str, ...] = field(default_factory=tuple)


def parse_exits(text: str) -> str | tuple[int, ...]:
    """``all`` | ``none`` | ``3,6,9`` (1-based layers)."""
    text = text.strip().lower()
    if text in ("all", "none"):
        return text
    try:
        layers = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise UsageError(f"cannot read --exits {text!r}: use all, none or layer numbers such as 3,6,9") from None
    if not layers or layers[0] < 1:
        raise UsageError(f"--exits {text!r}: layers are numbered from 1")
    return layers


def _max_opset() -> int:
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET

        return int(ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except ImportError:  # pragma: no cover - other torch layouts
        return DEFAULT_OPSET


def export_bundle(options: ExportOptions) -> ExportResult:
    """Export ``options.model`` into a validated bundle at ``options.out``."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification
    except ImportError as exc:
        raise missing_extra(exc.name or "torch", "export") from None
    from trtbert.modeling.heads import ExitHeads
    from trtbert.modeling.source import load_pretrained, resolve_model
    from trtbert.modeling.specs import get_spec

    start = time.perf_counter()
    if not MIN_OPSET <= options.opset <= _max_opset():
        raise ExportError(
            f"opset {options.opset} cannot be produced by the installed torch exporter "
            f"(supported: {MIN_OPSET}-{_max_opset()}); use --opset {DEFAULT_OPSET}"
        )
    source = resolve_model(options.model)
    protect = [source] if Path(source).is_dir() else []
    if options.tokenizer and Path(options.tokenizer).expanduser().is_dir():
        protect.append(options.tokenizer)
    B.check_writable(options.out, options.overwrite, protect=protect)
    config = load_pretrained(AutoConfig, options.model)
    spec = get_spec(config.model_type)
    tolerance = options.tolerance if options.tolerance is not None else spec.tolerance
    tokenizer = _load_tokenizer(options, source, config)
    torch.manual_seed(options.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, loading_info = load_pretrained(
            AutoModelForSequenceClassification, options.model, attn_implementation="eager", output_loading_info=True
        )
    model.eval()
    heads = ExitHeads.load(source) if Path(source).is_dir() else None
    notes: list[str] = []
    fresh = [k for k in loading_info.get("missing_keys", []) if not k.startswith(spec.base + ".")]
    if fresh:
        notes.append(f"the classifier ({', '.join(sorted(fresh))}) is newly initialised, not trained: "
                     "fine-tune it with trtbert train before trusting its predictions")
    num_layers = spec.num_layers(config)
    exit_layers, head_of = _choose_exits(options.exits, heads, num_layers, notes)
    for note in notes:
        log.warning(note)

    from trtbert.exporter.writer import BundleWriter

    params = sum(p.numel() for p in model.parameters())
    B.check_writable(options.out, options.overwrite, need_bytes=int(params * 4 * 1.1), protect=protect)
    with B.atomic_directory(options.out, overwrite=options.overwrite, protect=protect, label="export") as tmp, \
            torch.inference_mode():
        writer = BundleWriter(tmp, model, spec, options.opset, tolerance)
        writer.write_tokenizer(tokenizer)
        writer.write_stages(head_of, exit_layers)
        faults.point("export:after-stages")
        chain = writer.validate_chain(exit_layers, head_of)
        model_info = _model_info(config, spec, source, tokenizer)
        manifest = writer.manifest(
            model_info,
            exit_layers,
            heads={"readout": heads.config.readout if heads else None,
                   "trained_layers": list(heads.config.layers) if heads else []},
            export={
                "opset": options.opset, "tolerance": tolerance, "trtbert": __version__,
                "torch": torch.__version__, "transformers": _transformers_version(),
                "tokenizer": options.tokenizer or source,
                "chain_max_diff": {str(k): v for k, v in chain.items()},
                "seconds": round(time.perf_counter() - start, 2),
            },
        )
        manifest = _with_source_costs(B.Bundle(tmp, manifest), manifest)
        B.write_manifest(tmp, manifest)
        faults.point("export:before-rename")
        reports = writer.reports
    total = sum(e.size for e in manifest.files.values())
    seconds = time.perf_counter() - start
    log.info("exported %s to %s in %.1f s (%s)", options.model, options.out, seconds, f"{total / 2**20:.1f} MiB")
    return ExportResult(
        bundle=options.out, stages=tuple(reports), exit_layers=exit_layers, chain_diffs=chain,
        seconds=seconds, total_bytes=total, notes=tuple(notes),
    )


def _with_source_costs(bundle: B.Bundle, manifest: B.Manifest) -> B.Manifest:
    """The manifest with the resident cost of each exported graph run as it is (the ``onnx`` set),
    measured in a clean process like a built set's."""
    import dataclasses

    from trtbert.engines.costs import measure_costs

    measured = measure_costs(bundle, bundle.engine_set(B.SOURCE_SET))
    costs = {"costs": measured.costs, "shared": measured.shared}
    return dataclasses.replace(manifest, export={**manifest.export, "costs": costs})


def _load_tokenizer(options: ExportOptions, source: str, config: Any) -> Any:
    """The fast tokenizer of the checkpoint (or ``--tokenizer``), refused when missing or when its
    vocabulary does not fit the model's embedding table."""
    from transformers import AutoTokenizer

    from trtbert.modeling.source import load_pretrained

    where = options.tokenizer or source
    local = Path(where).expanduser()
    if local.is_dir() and not any((local / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(
            f"{where} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...): the bundle would map every "
            "word to [UNK]; save the tokenizer beside the model (tokenizer.save_pretrained) or pass "
            "--tokenizer PATH|HF-ID"
        )
    tokenizer = load_pretrained(AutoTokenizer, where, use_fast=True)
    size, table = len(tokenizer), int(config.vocab_size)
    if size > table or size < table // 2:
        raise ModelError(
            f"the tokenizer of {where} has {size} tokens but the model's embedding table has {table} rows: "
            "they do not belong together; pass the model's own tokenizer with --tokenizer PATH|HF-ID"
        )
    return tokenizer


def _choose_exits(
    wanted: str | tuple[int, ...], heads: Any, num_layers: int, notes: list[str]
) -> tuple[tuple[int, ...], dict[int, Any]]:
    """Layers that get an exit, and the trained head of each intermediate one."""
    trained = set(heads.config.layers) if heads is not None else set()
    if wanted == "none":
        chosen: set[int] = set()
    elif wanted == "all":
        chosen = trained
        if not trained:
            notes.append("the checkpoint has no trained exit heads: exported with the final exit only "
                         "(train heads with: trtbert train ...)")
    else:
        assert isinstance(wanted, tuple)
        bad = [layer for layer in wanted if layer > num_layers]
        if bad:
            raise UsageError(f"--exits {bad} beyond the model's {num_layers} layers")
        untrained = sorted(set(wanted) - trained - {num_layers})
        if untrained:
            raise ModelError(
                f"no trained exit head for layer(s) {untrained} in this checkpoint "
                f"(trained: {sorted(trained) or 'none'}); train them with: trtbert train ..."
            )
        chosen = set(wanted)
    chosen.discard(num_layers)
    head_of = {layer: heads.head(layer) for layer in sorted(chosen)}
    return (*sorted(chosen), num_layers), head_of


def _model_info(config: Any, spec: Any, source: str, tokenizer: Any) -> B.ModelInfo:
    num_labels = int(config.num_labels)
    problem = config.problem_type or (B.REGRESSION if num_labels == 1 else B.CLASSIFICATION)
    if problem not in (B.REGRESSION, B.CLASSIFICATION):
        raise ModelError(f"problem type {problem!r} is not supported (single-label classification or regression)")
    labels = tuple(str(config.id2label.get(i, f"LABEL_{i}")) for i in range(num_labels))
    max_pos = int(config.max_position_embeddings)
    if config.model_type == "roberta":
        max_pos -= int(config.pad_token_id) + 1  # positions start after the padding index
    tok_max = int(getattr(tokenizer, "model_max_length", max_pos) or max_pos)
    return B.ModelInfo(
        source=source,
        revision=getattr(config, "_commit_hash", None),
        model_type=config.model_type,
        hidden_size=spec.hidden_size(config),
        embedding_size=spec.embedding_size(config),
        num_layers=spec.num_layers(config),
        num_heads=spec.num_heads(config),
        vocab_size=int(config.vocab_size),
        max_positions=min(max_pos, tok_max),
        problem_type=problem,
        labels=labels,
        uses_token_type_ids=spec.uses_token_type_ids,
        pad_token_id=int(config.pad_token_id if config.pad_token_id is not None else 0),
    )


def _transformers_version() -> str:
    import transformers

    return transformers.__version__
