"""Engines: what runs a model's forward pass, PyTorch or ONNX Runtime (fp32 or int8).

The choice (core.runtime decides, `choice` applies it and falls back with a reason), the export
to ONNX, the verified cache its files live in, static int8 quantization and its measured agreement
on the check photos (core.datasets.check_images).
"""
