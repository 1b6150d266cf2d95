"""Export: per-architecture specs, stage wrappers, ONNX export and validation against PyTorch.

Everything in this package needs torch and transformers (``pip install 'trtbert[export]'``).
"""
