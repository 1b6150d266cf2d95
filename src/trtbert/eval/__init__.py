"""Evaluation: GLUE metric, latency, memory and exit analysis of a bundle; sweeps and calibration."""
