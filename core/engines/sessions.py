"""ONNX Runtime sessions: one per verified file, shared by every request, and a session as a forward function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core import runtime


def open_session(path: Path, *, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for the model at `path`.

    All graph optimisations (constant folding, fusions, the blocked NCHWc layout for convolutions);
    intra-op threads as many as torch's (core.runtime.onnx_threads); no inter-op parallelism (one
    request's operators run in order; concurrent requests each get their own run). No memory arena:
    activations go back to the allocator after each run instead of staying reserved per model (a
    pool of five models would otherwise keep five peaks); at batch 1 that costs nothing measurable,
    and `make run`'s malloc.env keeps freed memory for reuse for all models together. ONNX Runtime's
    telemetry events are switched off.
    """
    import onnxruntime

    onnxruntime.disable_telemetry_events()  # nothing about the models a person runs leaves the machine
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or runtime.onnx_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class SessionForward:
    """A session as a forward function: a float batch (N, 3, S, S) in, its one output as a tensor.

    `InferenceSession.run` is thread-safe, so one of these serves every browser session at once.
    """

    def __init__(self, session: Any):
        self.session = session
        self.input = session.get_inputs()[0].name
        self.output = session.get_outputs()[0].name

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = batch.detach().to("cpu", torch.float32).contiguous().numpy()  # no copy for a CPU float batch
        (result,) = self.session.run([self.output], {self.input: array})
        return torch.from_numpy(result)


def session_forward(path: Path) -> SessionForward:
    """The file at `path` opened in ONNX Runtime (through `open_session`, looked up when called)."""
    return SessionForward(open_session(path))
