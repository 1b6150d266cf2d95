"""Exit-head training on Hugging Face accelerate: joint, two-stage, heads-only and distill objectives.

- ``joint``: backbone and every exit together, loss ``sum_i i * loss_i / sum_i i`` (PABEE);
- ``distill``: like joint, but heads 1..L-1 mix the hard-label loss with a KL to the last layer's
  soft predictions at temperature T (MSE to its prediction for regression); the teacher is detached;
- ``two-stage``: fine-tune backbone + classifier, then the heads on a frozen backbone (DeeBERT);
- ``heads-only``: the heads of an already fine-tuned classifier, backbone frozen.

With the backbone frozen, each example's head inputs (read-outs) are computed once under
``torch.no_grad`` and cached, and the heads train on the cache. The best epoch is picked by the last
layer's dev metric while the backbone trains, and by the mean over the exit heads while it is frozen
(the last layer cannot change then); its weights are the ones saved.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from trtbert.data import Task, get_task, load_split, resolve_data_dir, score
from trtbert.errors import DataError, ModelError, missing_extra
from trtbert.modeling.heads import ExitHeads, HeadsConfig
from trtbert.modeling.source import load_pretrained
from trtbert.modeling.specs import ArchSpec, get_spec
from trtbert.train.output import check_out, summary_json, write_checkpoint
from trtbert.train.dataset import EncodedDataset, make_collate, make_loader
from trtbert.train.exit_model import CachedHeads, ExitModel, distill_loss, weighted_loss, readout_features, task_loss
from trtbert.train.options import EpochResult, TrainOptions, TrainResult

log = logging.getLogger(__name__)


def train(options: TrainOptions) -> TrainResult:
    """Train ``options.model`` (and its exit heads) on ``options.task``; write the checkpoint to ``options.out``."""
    try:
        import accelerate  # noqa: F401
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise missing_extra(exc.name or "accelerate", "train") from None
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from trtbert.modeling.source import resolve_model

    task = get_task(options.task)
    source = resolve_model(options.model)
    out = check_out(options, source)
    accelerator = Accelerator()
    set_seed(options.seed)
    data_dir = resolve_data_dir(task, options.data_dir)
    train_examples = load_split(task, "train", data_dir, options.limit, dataset=options.dataset)
    dev_examples = load_split(task, "dev", data_dir, options.eval_limit, dataset=options.dataset)
    if not train_examples or not dev_examples:
        raise DataError(f"{task.name}: the train or dev split has no rows")
    tokenizer = load_pretrained(AutoTokenizer, options.model, use_fast=True)
    model = _load_model(options, task)
    spec = get_spec(model.config.model_type)
    num_layers = spec.num_layers(model.config)
    heads = None
    if options.heads:
        if num_layers < 2:
            raise ModelError(f"{options.model} has {num_layers} layer; exit heads need at least 2")
        heads = ExitHeads(HeadsConfig(
            options.readout, tuple(range(1, num_layers)), task.num_labels,
            spec.hidden_size(model.config), model.config.model_type,
        ))
    collate = make_collate(tokenizer, spec.uses_token_type_ids)
    run = _Run(accelerator, options, task, spec, num_layers, collate,
               EncodedDataset(tokenizer, train_examples, task, options.max_seq_len),
               EncodedDataset(tokenizer, dev_examples, task, options.max_seq_len))

    start = time.perf_counter()
    per_epoch = math.ceil(len(train_examples) / (options.batch_size * accelerator.num_processes))
    stages = 2 if options.objective == "two-stage" else 1
    bar = tqdm(total=stages * options.epochs * per_epoch, desc=f"train {task.name}", unit="step",
               disable=not accelerator.is_local_main_process)
    epochs: list[EpochResult] = []
    with bar:
        if options.objective in ("joint", "distill"):
            best = run.live_stage(model, heads, "joint", epochs, bar)
        elif options.objective == "two-stage":
            run.live_stage(model, None, "backbone", epochs, bar)
            best = run.cached_stage(model, heads, epochs, bar)
        else:
            best = run.cached_stage(model, heads, epochs, bar)
    seconds = time.perf_counter() - start

    result = TrainResult(
        out=out, task=task.name, metric=task.metric, num_layers=num_layers, epochs=tuple(epochs),
        best_epoch=best, best=epochs[best - 1].dev, seconds=seconds,
        train_examples=len(train_examples), eval_examples=len(dev_examples),
    )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_checkpoint(out, model, tokenizer, heads, summary_json(result, options), options.overwrite, source)
    return result


def _load_model(options: TrainOptions, task: Task) -> nn.Module:
    """The sequence classifier; heads-only refuses a model without a trained classification head."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = load_pretrained(AutoConfig, options.model)
    archs = list(getattr(config, "architectures", None) or [])
    frozen = options.objective == "heads-only"
    if frozen and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelError(
            f"--objective heads-only needs a fine-tuned sequence classifier, but {options.model} is "
            f"{'/'.join(archs) or 'a model without architectures'} with no classification head; "
            "use --objective joint or two-stage to fine-tune it"
        )
    if frozen and config.num_labels != task.num_labels:
        raise ModelError(
            f"{options.model} predicts {config.num_labels} labels but {task.name} has {task.num_labels}; "
            "heads-only needs a classifier fine-tuned on this task"
        )
    kwargs: dict[str, Any] = dict(
        num_labels=task.num_labels, problem_type=task.problem_type, id2label=task.id2label,
        label2id=task.label2id, attn_implementation="eager", output_loading_info=True,
    )
    if not frozen:
        kwargs["ignore_mismatched_sizes"] = True  # a classifier of another width is re-initialised
    model, info = load_pretrained(AutoModelForSequenceClassification, options.model, **kwargs)
    untrained = sorted(info.get("missing_keys") or []) + sorted(str(k) for k in info.get("mismatched_keys") or [])
    if frozen and untrained:
        raise ModelError(
            f"{options.model} has no trained classification head (missing weights: {', '.join(untrained)}); "
            "use --objective joint or two-stage to fine-tune it"
        )
    if untrained:
        log.info("newly initialised: %s", ", ".join(untrained))
    return model


@dataclass
class _Run:
    """State shared by the stages of one training run."""

    acc: Any  # accelerate.Accelerator
    options: TrainOptions
    task: Task
    spec: ArchSpec
    num_layers: int
    collate: Any
    train_ds: EncodedDataset
    dev_ds: EncodedDataset

    def _optimizer(self, groups: list[dict[str, Any]], steps: int) -> tuple[Any, Any]:
        from transformers import get_linear_schedule_with_warmup

        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=self.options.weight_decay)
        schedule = get_linear_schedule_with_warmup(optimizer, int(self.options.warmup_ratio * steps), steps)
        return optimizer, schedule

    def _scores(self, logits: list[list[np.ndarray]], labels: np.ndarray) -> list[float | None]:
        return [score(self.task, np.concatenate(p), labels)[self.task.metric] if p else None for p in logits]

    def live_stage(self, model: nn.Module, heads: ExitHeads | None, stage: str,
                   epochs: list[EpochResult], bar: Any) -> int:
        """Train backbone + classifier (+ heads); return the best epoch (1-based, over all stages)."""
        o, acc = self.options, self.acc
        model.requires_grad_(True)
        exit_model = ExitModel(model, heads, self.spec)
        train_loader = make_loader(self.train_ds, o.batch_size, True, o.seed, self.collate)
        dev_loader = make_loader(self.dev_ds, o.batch_size, False, o.seed, self.collate)
        optimizer, schedule = self._optimizer(
            [{"params": list(model.parameters()), "lr": o.lr},
             {"params": list(heads.parameters()) if heads is not None else [], "lr": o.head_lr}],
            o.epochs * len(train_loader),
        )
        exit_model, optimizer, train_loader, dev_loader, schedule = acc.prepare(
            exit_model, optimizer, train_loader, dev_loader, schedule
        )
        best, best_state, first = 0, None, len(epochs) + 1
        for epoch in range(first, first + o.epochs):
            start, losses = time.perf_counter(), []
            exit_model.train()
            for batch in train_loader:
                labels = batch.pop("labels")
                loss = self._live_loss(exit_model(**batch), labels, heads is not None)
                acc.backward(loss)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            dev = self._evaluate_live(exit_model, dev_loader)
            epochs.append(EpochResult(epoch, stage, tuple(dev), float(np.mean(losses)), time.perf_counter() - start))
            log.info("epoch %d (%s): loss %.4f, dev %s %s", epoch, stage, np.mean(losses), self.task.metric, _fmt(dev))
            if best == 0 or (dev[-1] or 0.0) > (epochs[best - 1].dev[-1] or 0.0):
                best = epoch
                best_state = {k: v.detach().clone() for k, v in acc.unwrap_model(exit_model).state_dict().items()}
        assert best_state is not None
        acc.unwrap_model(exit_model).load_state_dict(best_state)
        return best

    def _live_loss(self, logits: list[torch.Tensor | None], labels: torch.Tensor, with_heads: bool) -> torch.Tensor:
        o, regression = self.options, self.task.is_regression
        final = logits[-1]
        assert final is not None
        last = task_loss(final, labels, regression)
        if not with_heads:
            return last
        per_layer = []
        for layer_logits in logits[:-1]:
            assert layer_logits is not None
            if o.objective == "distill":
                per_layer.append(distill_loss(layer_logits, final, labels, regression,
                                              o.distill_temperature, o.distill_alpha))
            else:
                per_layer.append(task_loss(layer_logits, labels, regression))
        return weighted_loss(per_layer + [last], o.layer_weights)

    def _evaluate_live(self, exit_model: nn.Module, dev_loader: Any) -> list[float | None]:
        exit_model.eval()
        per_layer: list[list[np.ndarray]] = [[] for _ in range(self.num_layers)]
        labels = []
        with torch.no_grad():
            for batch in dev_loader:
                y = batch.pop("labels")
                logits = exit_model(**batch)
                labels.append(self.acc.gather_for_metrics(y).cpu().numpy())
                for i, layer_logits in enumerate(logits):
                    if layer_logits is not None:
                        per_layer[i].append(self.acc.gather_for_metrics(layer_logits).float().cpu().numpy())
        return self._scores(per_layer, np.concatenate(labels))

    def _cache(self, model: nn.Module, dataset: EncodedDataset, readout: str) -> TensorDataset:
        """Read-outs of layers 1..L-1 ``(N, L-1, H)``, last-layer logits ``(N, C)`` and labels, once."""
        loader = make_loader(dataset, max(self.options.batch_size, 64), False, self.options.seed, self.collate)
        device = self.acc.device
        model.to(device).eval()
        features, teacher, labels = [], [], []
        with torch.no_grad():
            for batch in loader:
                y = batch.pop("labels")
                batch = {k: v.to(device) for k, v in batch.items()}
                out = model(**batch, output_hidden_states=True)
                features.append(torch.stack([
                    readout_features(readout, model, self.spec, out.hidden_states[layer], batch["attention_mask"])
                    for layer in range(1, self.num_layers)
                ], dim=1).cpu())  # (B, L-1, H)
                teacher.append(out.logits.float().cpu())
                labels.append(y)
        return TensorDataset(torch.cat(features), torch.cat(teacher), torch.cat(labels))

    def cached_stage(self, model: nn.Module, heads: ExitHeads | None, epochs: list[EpochResult], bar: Any) -> int:
        """Train the heads on cached read-outs of the frozen model; return the best epoch (1-based)."""
        assert heads is not None
        o, acc, regression = self.options, self.acc, self.task.is_regression
        model = acc.unwrap_model(model)
        model.requires_grad_(False)
        train_cache = self._cache(model, self.train_ds, heads.config.readout)
        dev_cache = self._cache(model, self.dev_ds, heads.config.readout)
        final_dev = score(self.task, dev_cache.tensors[1].numpy(), dev_cache.tensors[2].numpy())[self.task.metric]
        module = CachedHeads(heads)
        train_loader = make_loader(train_cache, o.batch_size, True, o.seed)
        dev_loader = make_loader(dev_cache, 256, False, o.seed)
        optimizer, schedule = self._optimizer(
            [{"params": list(heads.parameters()), "lr": o.head_lr}], o.epochs * len(train_loader)
        )
        module, optimizer, train_loader, dev_loader, schedule = acc.prepare(
            module, optimizer, train_loader, dev_loader, schedule
        )
        best, best_mean, best_state, first = 0, -math.inf, None, len(epochs) + 1
        for epoch in range(first, first + o.epochs):
            start, losses = time.perf_counter(), []
            module.train()
            for features, _, labels in train_loader:
                logits = module(features)  # (B, L-1, C)
                loss = sum(task_loss(logits[:, i], labels, regression) for i in range(logits.shape[1]))
                acc.backward(loss)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                losses.append(float(loss.item()))
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            module.eval()
            per_head: list[list[np.ndarray]] = [[] for _ in range(self.num_layers - 1)]
            labels_all = []
            with torch.no_grad():
                for features, _, labels in dev_loader:
                    logits = acc.gather_for_metrics(module(features)).cpu().numpy()
                    labels_all.append(acc.gather_for_metrics(labels).cpu().numpy())
                    for i in range(logits.shape[1]):
                        per_head[i].append(logits[:, i])
            dev = self._scores(per_head, np.concatenate(labels_all)) + [final_dev]
            epochs.append(EpochResult(epoch, "heads", tuple(dev), float(np.mean(losses)), time.perf_counter() - start))
            log.info("epoch %d (heads): loss %.4f, dev %s %s", epoch, np.mean(losses), self.task.metric, _fmt(dev))
            mean = float(np.mean([d for d in dev[:-1] if d is not None]))
            if mean > best_mean:
                best, best_mean = epoch, mean
                best_state = {k: v.detach().clone() for k, v in heads.state_dict().items()}
        assert best_state is not None
        heads.load_state_dict(best_state)
        return best


def _fmt(values: list[float | None]) -> str:
    return " / ".join("-" if v is None else f"{v:.1f}" for v in values)
