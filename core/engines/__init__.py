"""Engines: what runs a model's forward pass, PyTorch or ONNX Runtime (fp32 or int8).

One handle per catalogue model (`handle`: a torch face and an inference face), the choice of engine
(core.runtime decides, `choice` applies it and falls back with a reason), ONNX Runtime's sessions, the one
verified-export pipeline (`verified`: export, check against PyTorch, quantize, measure, cache) with its
pieces (the export, the verified cache its files live in, static int8 quantization), each measured on
the check photos (core.datasets.check_images).
"""
