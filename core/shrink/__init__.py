"""Shrink a model for a device, and ship it: variants made (int8, whole channels pruned and recovered, both,
single weights zeroed), each measured here the same way (parameters, GFLOPS, size, latency, fidelity), and
the one a person keeps written as .onnx, .ort or .pte, each run in its own runtime before it is handed over.

source (what is shrunk, and its images) -> prune / recover / int8 / sparsity (the variants) -> variants
(measuring one) -> run (all of them, then shipping one) -> ship (the files, verified) and report (table, JSON).
"""
