"""The peer's best single graphs: what a user of ONNX Runtime's own tools gets from ``full.onnx``.

* ``peer-fp32.onnx``: ``onnxruntime.transformers.optimizer.optimize_model(full.onnx, model_type="bert")``
  (fused Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization; its default opt level);
* ``peer-int8.onnx``: that graph through ``quantize_dynamic`` with its defaults (s8 weights, per tensor,
  every supported op: QAttention and the MatMuls), what optimum's ``avx512_vnni`` dynamic config does.

Both load with ONNX Runtime's default session options (every optimisation on, spinning threads) and
``--threads`` intra-op threads.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path


def make_peer_graphs(full: Path, workdir: Path, num_heads: int = 12, hidden_size: int = 768,
                     rebuild: bool = False) -> tuple[Path, Path]:
    """Write (if missing) ``peer-fp32.onnx`` and ``peer-int8.onnx`` beside ``full``; their paths."""
    fp32, int8 = workdir / "peer-fp32.onnx", workdir / "peer-int8.onnx"
    if rebuild or not fp32.is_file():
        from onnxruntime.transformers import optimizer

        model = optimizer.optimize_model(str(full), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
        print(f"peer fp32 fusions: {model.get_fused_operator_statistics()}")
        model.save_model_to_file(str(fp32))
    if rebuild or not int8.is_file():
        import onnx
        from onnxruntime.quantization import quantize_dynamic

        logging.getLogger().setLevel(logging.ERROR)
        private = workdir / ".peer-source.onnx"
        shutil.copyfile(fp32, private)
        try:
            quantize_dynamic(private, int8, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            private.unlink(missing_ok=True)
            private.with_name(private.stem + "-inferred.onnx").unlink(missing_ok=True)
    return fp32, int8
