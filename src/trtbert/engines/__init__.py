"""Engines: one compiled stage on one backend, behind one lifecycle (load / infer / unload).

``ort`` (ONNX Runtime: CPU, CUDA, TensorRT provider) works anywhere; ``tensorrt`` (through
Polygraphy) on NVIDIA GPUs and Jetson. ``build`` turns a bundle's ONNX stages into engine sets.
"""
