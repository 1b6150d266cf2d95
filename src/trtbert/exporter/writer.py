"""Write a bundle's files: tokenizer, word-embedding table, one ONNX graph per stage, each validated.

Every stage is exported with the legacy TorchScript exporter (fast, dynamic batch and sequence axes)
and checked at once against its PyTorch module on the same inputs; ``validate_chain`` then checks the
ONNX stages end to end against the full transformers model.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trtbert import bundle as B
from trtbert.errors import ExportError, ModelError, first_line
from trtbert.modeling.specs import ArchSpec
from trtbert.exporter.stages import EmbeddingsStage, HeadStage, LayerStage, readout

log = logging.getLogger(__name__)

_AXES = {0: "batch", 1: "sequence"}


@dataclass(frozen=True)
class StageReport:
    """One exported stage: its file, size and the max abs difference against PyTorch."""

    name: str
    file: str
    nbytes: int
    max_diff: float


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def tensor_specs(values: Any) -> tuple[B.TensorSpec, ...]:
    """Manifest tensor specs of an ONNX graph's inputs or outputs."""
    from onnx.helper import tensor_dtype_to_np_dtype

    specs = []
    for v in values:
        t = v.type.tensor_type
        shape = tuple(d.dim_param or d.dim_value for d in t.shape.dim)
        specs.append(B.TensorSpec(v.name, np.dtype(tensor_dtype_to_np_dtype(t.elem_type)).name, shape))
    return tuple(specs)


class BundleWriter:
    """Builds the files of one bundle inside a (temporary) directory."""

    def __init__(self, root: Path, model: nn.Module, spec: ArchSpec, opset: int, tolerance: float) -> None:
        self.root = root
        self.model = model
        self.spec = spec
        self.opset = opset
        self.tolerance = tolerance
        self.stages: list[B.Stage] = []
        self.reports: list[Any] = []
        self.diffs: dict[str, float] = {}
        self._sessions: dict[str, Any] = {}
        config = model.config
        pad = int(config.pad_token_id if config.pad_token_id is not None else 0)
        from trtbert.bundle.samples import sample_batches

        self.samples = sample_batches(int(config.vocab_size), pad, int(config.max_position_embeddings),
                                      token_types=int(getattr(config, "type_vocab_size", 2)) >= 2)
        B.make_dir(root / B.ONNX_DIR)

    # --- files ----------------------------------------------------------------------------------

    def write_tokenizer(self, tokenizer: Any) -> None:
        """Save the fast tokenizer into ``tokenizer/``; the runtime reads ``tokenizer.json``."""
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError("the model has no fast tokenizer (tokenizer.json); the runtime needs one")
        tokenizer.save_pretrained(str(self.root / B.TOKENIZER_DIR))
        if not (self.root / B.TOKENIZER_JSON).is_file():
            raise ModelError("saving the tokenizer wrote no tokenizer.json; the runtime needs one")

    def write_stages(self, head_of: dict[int, nn.Module], exit_layers: tuple[int, ...]) -> None:
        """Export and validate embeddings, every layer and (ALBERT) every separate head."""
        table = self.spec.word_embeddings(self.model).weight
        np.save(self.root / B.WORD_EMBEDDINGS, _to_numpy(table).astype(np.float32))
        inputs = [self._embed_inputs(feeds) for feeds in self.samples]
        hidden = self._export(B.stage_name(B.EMBEDDINGS), B.EMBEDDINGS, EmbeddingsStage(self.model, self.spec), inputs)
        masks = [torch.from_numpy(feeds[B.ATTENTION_MASK]) for feeds in self.samples]
        exported: dict[int, str] = {}  # id(layer module) -> file, so shared layers are written once
        final = exit_layers[-1]
        for depth, layer in enumerate(self.spec.layers(self.model), start=1):
            name = B.stage_name(B.LAYER, depth)
            has_exit = depth in exit_layers
            inline = None if self.spec.shares_layers or not has_exit else readout(
                self.model, self.spec, None if depth == final else head_of[depth]
            )
            args = [{B.HIDDEN: h, B.ATTENTION_MASK: m} for h, m in zip(hidden, masks)]
            shared = exported.get(id(layer))
            outs = self._export(name, B.LAYER, LayerStage(layer, inline), args, layer=depth, exit=inline is not None,
                                reuse=shared)
            exported.setdefault(id(layer), B.onnx_file(name))
            hidden = [o[0] for o in outs]
            if self.spec.shares_layers and has_exit:
                head = HeadStage(readout(self.model, self.spec, None if depth == final else head_of[depth]))
                head_args = [{B.HIDDEN: h, B.ATTENTION_MASK: m} for h, m in zip(hidden, masks)]
                self._export(B.stage_name(B.HEAD, depth), B.HEAD, head, head_args, layer=depth, exit=True)

    def _embed_inputs(self, feeds: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(feeds[B.INPUT_IDS])
        args = {B.INPUT_IDS: ids}
        if self.spec.uses_token_type_ids:
            args[B.TOKEN_TYPE_IDS] = torch.from_numpy(feeds[B.TOKEN_TYPE_IDS])
        args[B.INPUTS_EMBEDS] = self.spec.word_embeddings(self.model)(ids)
        return args

    def _export(
        self,
        name: str,
        kind: str,
        module: nn.Module,
        args: list[dict[str, torch.Tensor]],
        layer: int | None = None,
        exit: bool = False,
        reuse: str | None = None,
    ) -> list[Any]:
        """Export ``module`` (unless ``reuse`` names an already written file), validate, record the stage."""
        import onnx

        module.eval()  # a fresh wrapper is in training mode; export would restore that mode recursively
        rel = reuse or B.onnx_file(name)
        path = self.root / rel
        output_names = module.output_names if isinstance(module, LayerStage) else (
            [B.HIDDEN] if kind == B.EMBEDDINGS else [B.LOGITS])
        torch_outs = [module(*a.values()) for a in args]
        if reuse is None:
            input_names = list(args[0])
            axes = {n: _AXES for n in input_names} | {n: (_AXES if n != B.LOGITS else {0: "batch"}) for n in output_names}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    torch.onnx.export(
                        module, tuple(args[0].values()), str(path), input_names=input_names,
                        output_names=output_names, dynamic_axes=axes, opset_version=self.opset,
                        do_constant_folding=True, dynamo=False,
                    )
                except torch.onnx.errors.OnnxExporterError as exc:  # an operator this opset cannot express
                    raise ExportError(f"exporting {name} with opset {self.opset} failed: {first_line(exc)}") from exc
                except OSError as exc:
                    raise B.os_error("write", path, exc) from exc
        graph = onnx.load(str(path), load_external_data=False).graph
        stage = B.Stage(name=name, kind=kind, file=rel, inputs=tensor_specs(graph.input),
                        outputs=tensor_specs(graph.output), layer=layer, exit=exit)
        self.stages.append(stage)
        diff = self._validate(stage, args, torch_outs, output_names)
        self.diffs[name] = diff
        self.reports.append(StageReport(name, rel, path.stat().st_size, diff))
        log.info("%-12s %-22s %8.2f MiB  max|diff| %.2e", name, rel, path.stat().st_size / 2**20, diff)
        return torch_outs

    def _session(self, rel: str) -> Any:
        import onnxruntime as ort

        if rel not in self._sessions:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            self._sessions[rel] = ort.InferenceSession(str(self.root / rel), so, providers=["CPUExecutionProvider"])
        return self._sessions[rel]

    def _validate(self, stage: B.Stage, args: list[dict[str, torch.Tensor]], torch_outs: list[Any], names: list[str]) -> float:
        session = self._session(stage.file)
        wanted = [t.name for t in stage.inputs]
        worst = 0.0
        for feeds, ref in zip(args, torch_outs):
            got = session.run(names, {k: _to_numpy(v) for k, v in feeds.items() if k in wanted})
            refs = ref if isinstance(ref, tuple) else (ref,)
            for g, r in zip(got, refs):
                worst = max(worst, float(np.max(np.abs(g - _to_numpy(r)))))
        return worst

    # --- end to end -------------------------------------------------------------------------------

    def validate_chain(self, exit_layers: tuple[int, ...], head_of: dict[int, nn.Module]) -> dict[int, float]:
        """Run the ONNX stages in order (numpy gather for word embeddings) against the full model.

        Compares every exit's logits: the last against the transformers model's own logits, the others
        against their head applied to transformers' hidden states. Raises :class:`ExportError` with a
        per-stage table if any stage or exit is off by more than the tolerance.
        """
        from trtbert.bundle.chain import run_chain

        table = np.load(self.root / B.WORD_EMBEDDINGS, mmap_mode="r")
        chain: dict[int, float] = {}
        for feeds in self.samples:
            reference = self._reference(feeds, exit_layers, head_of)

            def compare(layer: int, logits: np.ndarray, *_: np.ndarray, reference=reference) -> None:
                diff = float(np.max(np.abs(logits - reference[layer])))
                chain[layer] = max(chain.get(layer, 0.0), diff)

            run_chain(self.stages, exit_layers, lambda _, stage, f: self._run(stage, f), feeds,
                      np.asarray(table[feeds[B.INPUT_IDS]]), on_exit=compare)
        failures = {k: v for k, v in self.diffs.items() if v > self.tolerance}
        failures |= {f"chain exit {k}": v for k, v in chain.items() if v > self.tolerance}
        if failures:
            rows = "\n".join(f"  {k:<16} {v:.3e}" for k, v in {**self.diffs, **{f'chain exit {k}': v for k, v in chain.items()}}.items())
            raise ExportError(
                f"validation against PyTorch failed (tolerance {self.tolerance:g}) for "
                f"{', '.join(failures)}; max |diff| per stage:\n{rows}"
            )
        log.info("chain validated: max |diff| per exit %s", {k: f"{v:.1e}" for k, v in chain.items()})
        return chain

    def _run(self, stage: B.Stage, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [t.name for t in stage.outputs]
        return dict(zip(names, self._session(stage.file).run(names, feeds)))

    def _reference(self, feeds: dict[str, np.ndarray], exit_layers: tuple[int, ...], head_of: dict[int, nn.Module]) -> dict[int, np.ndarray]:
        kwargs = {"input_ids": torch.from_numpy(feeds[B.INPUT_IDS]), "attention_mask": torch.from_numpy(feeds[B.ATTENTION_MASK])}
        if self.spec.uses_token_type_ids:
            kwargs["token_type_ids"] = torch.from_numpy(feeds[B.TOKEN_TYPE_IDS])
        out = self.model(**kwargs, output_hidden_states=True)
        refs = {exit_layers[-1]: _to_numpy(out.logits)}
        for layer in exit_layers[:-1]:
            refs[layer] = _to_numpy(readout(self.model, self.spec, head_of[layer])(out.hidden_states[layer], kwargs["attention_mask"]))
        return refs

    # --- manifest -------------------------------------------------------------------------------

    def manifest(self, model: B.ModelInfo, exit_layers: tuple[int, ...], heads: dict[str, Any], export: dict[str, Any]) -> B.Manifest:
        """The manifest of everything written so far (call last)."""
        self._sessions.clear()
        files = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return B.Manifest(
            model=model,
            stages=tuple(self.stages),
            files={rel: B.file_entry(self.root, rel) for rel in files},
            exit_layers=exit_layers,
            heads=heads,
            export={**export, "stage_max_diff": dict(self.diffs)},
        )
