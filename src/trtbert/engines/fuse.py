"""Transformer fusions of one stage graph: ONNX Runtime's offline optimiser (``onnxruntime.transformers``)
turns a layer's attention block into one ``Attention`` (or ``MultiHeadAttention``) op, residual + LayerNorm
into ``SkipLayerNormalization`` and bias + GELU into ``BiasGelu``: the fusions a user of the whole-model
optimiser gets, applied to each stage.

The exported stages need one rewrite first (:func:`canonicalize`). transformers 5's eager attention
scales the scores with a ``Mul`` (``scores * head_dim**-0.5``) and adds the mask, itself a ``Mul``
(``(1 - mask) * min``); the optimiser's BERT pattern finds the mask as "the first ``Mul`` parent of the
``Add``", which is then the scores' scale, and gives up. Rewriting the scale as a ``Div`` by its
reciprocal (the classic BERT export, ``scores / sqrt(head_dim)``) is exact in real numbers and
matches the pattern. (The exporter could emit that form itself: compute the scores in the stage wrapper
as ``q @ k.T / sqrt(d)`` instead of calling the layer's eager attention, or add the mask before the
scale; the rewrite here makes that change unnecessary.) Constants become initializers, which the
optimiser reads when it checks the mask value.

The fused graph is checked against the exported stage by ``trtbert build`` like every built stage.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from trtbert.errors import EngineError, first_line, missing_extra

log = logging.getLogger(__name__)

FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu", "FastGelu", "Gelu",
             "LayerNormalization")


def canonicalize(model: Any) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto``) in place into the form the optimiser's attention pattern
    recognises: ``Constant`` nodes become initializers, and a softmax-input ``Add`` whose term is
    ``Mul(MatMul, c)`` gets ``Div(MatMul, 1/c)`` instead. Returns how many scales were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = helper.get_attribute_value(node.attribute[0])
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    producer = {out: node for node in graph.node for out in node.output}
    inits = {t.name: t for t in graph.initializer}
    rewritten = 0
    for node in graph.node:
        if node.op_type != "Softmax" or node.input[0] not in producer:
            continue
        add = producer[node.input[0]]
        if add.op_type != "Add":
            continue
        for name in add.input:
            mul = producer.get(name)
            if mul is None or mul.op_type != "Mul" or len(mul.input) != 2:
                continue
            matmul = producer.get(mul.input[0])
            scale = inits.get(mul.input[1])
            if matmul is None or matmul.op_type != "MatMul" or scale is None:
                continue
            value = numpy_helper.to_array(scale)
            if value.size != 1 or value.dtype != np.float32 or float(value.reshape(())) == 0.0:
                continue
            inverse = numpy_helper.from_array((1.0 / value.astype(np.float64)).astype(np.float32),
                                              f"{mul.input[1]}_reciprocal")
            graph.initializer.append(inverse)
            mul.op_type = "Div"
            mul.input[1] = inverse.name
            rewritten += 1
    return rewritten


ATTENTION = ("packed", "separate", "none")


def fuse_stage(src: Path, dst: Path, num_heads: int, hidden_size: int, attention: str = "packed") -> dict[str, int]:
    """Write the fused graph of stage ``src`` to ``dst``; returns how many of each fused op it holds.

    ``attention``: ``packed`` fuses the attention block into one ``Attention`` op with a packed QKV
    weight; ``separate`` into ``MultiHeadAttention`` with the Q/K/V projections left as ``MatMul`` nodes;
    ``none`` leaves attention unfused (what weight-only quantisation needs: its ``MatMulNBits`` cannot
    live inside ``Attention``). The attention mask stays the raw 0/1 mask (any padding pattern).
    """
    if attention not in ATTENTION:
        raise EngineError(f"unknown attention fusion {attention!r}; choose one of {', '.join(ATTENTION)}")
    try:
        import onnx
        from onnxruntime.transformers import optimizer
        from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    except ImportError as exc:
        raise missing_extra(exc.name or "onnx", "int8") from None
    model = onnx.load(str(src))
    canonicalize(model)
    options = FusionOptions("bert")
    options.attention_mask_format = AttentionMaskFormat.AttentionMask
    options.use_multi_head_attention = attention == "separate"
    options.enable_attention = attention != "none"
    options.enable_embed_layer_norm = False  # the word-embedding gather is not in any stage
    options.enable_gelu_approximation = False  # exact GELU, as exported
    quiet = [logging.getLogger(n) for n in ("onnx_model", "fusion_base", "onnx_model_bert", "fusion_utils",
                                            "fusion_attention", "shape_infer_helper", "fusion_skiplayernorm")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        optimized = optimizer.optimize_model(model, model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                                             opt_level=0, optimization_options=options)
        optimized.save_model_to_file(str(dst))
    except (ValueError, RuntimeError, KeyError, AssertionError) as exc:
        raise EngineError(f"fusing {src.name} failed: {first_line(exc)}; build with --no-fuse") from exc
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    counts = Counter(n.op_type for n in optimized.model.graph.node)
    fused = {op: counts[op] for op in FUSED_OPS if counts.get(op)}
    log.debug("fused %s: %s", src.name, fused)
    return fused
