"""A model variant as one file a phone app loads, each verified by running it in its own runtime.

- .onnx: one self-contained ONNX file (the export's external weights folded in), fp32 or int8 (QDQ); read by
  ONNX Runtime anywhere.
- .ort: ONNX Runtime Mobile's flatbuffer format, written by onnxruntime's own converter with the "Fixed"
  optimisation style (graph optimisations baked in, what the plain CPU provider on a phone runs best) for an
  ARM target: no x86-only NCHWc layout, and int8 QDQ pairs may fuse into int8 kernels as they do on ARM.
- .pte: an ExecuTorch program lowered to XNNPACK (the CPU backend of ExecuTorch on Android and iOS), fp32,
  batch 1 with static shapes. ExecuTorch is an optional dependency (requirements-shrink.txt).

`verify` runs the file itself, not the model it came from: ONNX Runtime for .onnx and .ort (an .ort file loads
in an ordinary InferenceSession), ExecuTorch's Python runtime for .pte; it counts the images whose top-1 is the
original model's and times batch 1. The snippets that show an app loading each file are in core.shrink.snippets.

Measured here on efficientnet_lite0 (2-core AVX2 CPU, 2 threads, 39 check images, a busy machine): .onnx
17.9 MB, .ort 17.7 MB, .pte 17.7 MB, all 39/39 the same top-1 as PyTorch; int8 .onnx 5.0 MB and .ort 4.8 MB,
both 36/39, the same answers as each other. Writing the .onnx or .ort from an export takes under half a
second, the .pte 25-37 s. The fp32 .ort runs about twice the .onnx's time here: what it lacks is x86's
NCHWc convolution layout (the .onnx with that one transformer disabled is as slow), which the converter
leaves out for an ARM target because no phone runs it; so an fp32 .ort's latency here says little about a
phone's. int8 .ort and .onnx, and the .pte against the .onnx, run about alike.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from core import runtime
from core.engines.quantize import median_ms, quiet_stdout
from core.engines.sessions import SessionForward, open_session
from core.errors import ZooScopeError

FORMATS = ("onnx", "ort", "pte")
INSTALL_EXECUTORCH = "pip install -r requirements-shrink.txt"
ORT_TARGET = "arm"  # phones: keeps the converter from baking in x86's NCHWc layout


class ExecuTorchMissing(ZooScopeError):
    """ExecuTorch (optional) is not installed, or cannot be imported, so .pte files cannot be made or run here."""

    def __init__(self, reason: str = "it is not installed here") -> None:
        super().__init__(f"ExecuTorch makes and runs .pte files, but {reason}: {INSTALL_EXECUTORCH}")


class ShipFailed(ZooScopeError):
    """A tool could not write or run a shipped file; the message says which tool and its reason, in one line."""


def executorch_available() -> bool:
    """Whether ExecuTorch is installed (looked up without importing it: the import takes seconds)."""
    return importlib.util.find_spec("executorch") is not None


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    first = text.splitlines()[0][:300] if text else "no message"
    return f"{type(error).__name__}: {first}"


# --- writing --------------------------------------------------------------------------------------


def write_onnx(onnx_path: Path, out: Path, *, metadata: Mapping[str, str] | None = None) -> Path:
    """The ONNX model at `onnx_path` (weights inside or in external data beside it; fp32 or int8) as one
    self-contained file at `out`, with `metadata` (classes, preprocessing) in its properties if given."""
    import onnx

    try:
        model = onnx.load(str(onnx_path))  # reads the external data back into the model
    except Exception as error:  # protobuf's DecodeError, a missing .data file, ...
        raise ShipFailed(f"ONNX could not read {Path(onnx_path).name} ({_reason(error)})") from error
    if metadata:
        onnx.helper.set_model_props(model, dict(metadata))
    try:
        onnx.save_model(model, str(out))  # no external data: everything in one protobuf
    except ValueError as error:  # protobuf refuses messages over 2 GB
        raise ShipFailed(f"the model is too big for a single ONNX file ({_reason(error)})") from error
    return Path(out)


def write_ort(onnx_path: Path, out: Path, *, metadata: Mapping[str, str] | None = None) -> Path:
    """ONNX Runtime Mobile's .ort file at `out`, converted from the ONNX model at `onnx_path` (fp32 or int8 QDQ)
    by `onnxruntime.tools.convert_onnx_models_to_ort`, in a temporary folder (it writes beside its input, plus
    a required-operators .config that only a custom ONNX Runtime build needs)."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    # The tool's module sets its logger to DEBUG on import: its note about the .config file is noise here.
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="zooscope-ort-") as folder:
        single = write_onnx(onnx_path, Path(folder) / "model.onnx", metadata=metadata)
        converted = Path(folder) / "converted"
        try:
            with quiet_stdout():
                convert_onnx_models_to_ort(
                    single,
                    output_dir=converted,
                    optimization_styles=[OptimizationStyle.Fixed],
                    target_platform=ORT_TARGET,
                )
        except Exception as error:  # ONNX Runtime's own load and optimiser errors
            raise ShipFailed(f"ONNX Runtime could not convert it to .ort ({_reason(error)})") from error
        # The tool returns nothing; it names its file after its input (plus a suffix for a non-default level).
        (written,) = converted.glob("model*.ort")
        shutil.move(written, out)
    return Path(out)


def write_pte(module: nn.Module, input_size: int, out: Path) -> Path:
    """`module` (eval mode, on the CPU, not changed) as an ExecuTorch program at `out`: lowered to XNNPACK,
    fp32, one input (the image, static shape (1, 3, S, S)). Raises ExecuTorchMissing where ExecuTorch is absent."""
    if not executorch_available():
        raise ExecuTorchMissing()
    if any(parameter.device.type != "cpu" for parameter in module.parameters()):
        raise ShipFailed("the .pte export needs the model on the CPU")
    example = torch.zeros(1, 3, input_size, input_size)
    try:
        # torch.export sets process-wide tracing state (see core.runtime), and importing ExecuTorch registers
        # operator libraries: both under the same lock as every other export.
        with runtime.TORCH_GLOBAL_STATE, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            exir, xnnpack = _executorch("executorch.exir", "executorch.backends.xnnpack.partition.xnnpack_partitioner")
            program = torch.export.export(module, (example,))
            lowered = exir.to_edge_transform_and_lower(program, partitioner=[xnnpack.XnnpackPartitioner()])
            buffer = lowered.to_executorch().buffer
    except ExecuTorchMissing:
        raise
    except Exception as error:  # unsupported operators, tracing errors, XNNPACK lowering errors
        raise ShipFailed(f"ExecuTorch could not export it ({_reason(error)})") from error
    Path(out).write_bytes(buffer)
    return Path(out)


def _executorch(*modules: str) -> list[Any]:
    """ExecuTorch's modules, imported by name: it is optional and ships no type information, so the type
    check reads the same with it installed or not. Its first import registers operator libraries with torch
    and warns that its Python runtime is experimental: under the lock of torch's global state."""
    try:
        with runtime.TORCH_GLOBAL_STATE, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [importlib.import_module(name) for name in modules]
    except ImportError as error:
        raise ExecuTorchMissing(f"it could not be imported ({_reason(error)})") from error


# --- verifying ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """A shipped file run in its own runtime on the check images, against the original model's answers."""

    format: str  # one of FORMATS
    path: Path
    size_mb: float
    runtime: str  # what ran it, with its version
    images: int
    same_top1: int  # images whose top-1 class is the original model's
    latency_ms: float  # batch 1, median
    threads: int  # the runtime's CPU threads while timed (0: not known)

    @property
    def agreement(self) -> float:
        return self.same_top1 / self.images if self.images else 0.0


def verify(
    format: str,
    path: Path,
    batches: Sequence[torch.Tensor],
    reference_top1: Sequence[int],
    *,
    threads: int | None = None,
) -> Verified:
    """Run the `format` file at `path` on `batches` (preprocessed, (N, 3, S, S)) in its own runtime, compare
    each image's top-1 with `reference_top1` (the original's, image by image), and time batch 1.

    `threads` sets ONNX Runtime's intra-op threads (default: as many as torch's); ExecuTorch runs on its own
    process-wide pool (one thread per core), which is not changed here: resizing it while another thread
    runs a program is unsafe."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; formats: {', '.join(FORMATS)}")
    images = sum(len(batch) for batch in batches)
    if images == 0 or images != len(reference_top1):
        raise ValueError(f"{images} images against {len(reference_top1)} reference answers")
    if format == "pte":
        forward, runtime_name, thread_count = _executorch_forward(Path(path))
    else:
        forward, runtime_name, thread_count = _onnx_runtime_forward(Path(path), threads)
    try:
        found = torch.cat([forward(batch).argmax(dim=1) for batch in batches])
        one = batches[0][:1]
        latency = median_ms({"batch 1": lambda: forward(one)})["batch 1"]
    except Exception as error:  # a file that loads but cannot run these inputs (wrong size, broken graph)
        raise ShipFailed(f"{runtime_name} could not run {Path(path).name} ({_reason(error)})") from error
    same = int((found == torch.as_tensor(list(reference_top1))).sum())
    return Verified(
        format=format,
        path=Path(path),
        size_mb=Path(path).stat().st_size / 2**20,
        runtime=runtime_name,
        images=images,
        same_top1=same,
        latency_ms=latency,
        threads=thread_count,
    )


Forward = Callable[[torch.Tensor], torch.Tensor]


def _onnx_runtime_forward(path: Path, threads: int | None) -> tuple[Forward, str, int]:
    import onnxruntime

    name = f"ONNX Runtime {onnxruntime.__version__}"
    count = threads or runtime.onnx_threads()
    try:
        session = open_session(path, threads=count)
    except Exception as error:  # not a model, a truncated file, an operator this build lacks
        raise ShipFailed(f"{name} could not load {path.name} ({_reason(error)})") from error
    return SessionForward(session), name, count


def _executorch_forward(path: Path) -> tuple[Forward, str, int]:
    if not executorch_available():
        raise ExecuTorchMissing()
    executorch_runtime, pybindings = _executorch("executorch.runtime", "executorch.extension.pybindings.portable_lib")
    name = f"ExecuTorch {importlib.metadata.version('executorch')} (XNNPACK)"
    try:
        method = executorch_runtime.Runtime.get().load_program(path).load_method("forward")
        expected = tuple(method.metadata.input_tensor_meta(0).sizes())
    except Exception as error:  # not a program ("Program identifier ... != expected"), a truncated file
        raise ShipFailed(f"{name} could not load {path.name} ({_reason(error)})") from error

    def forward(batch: torch.Tensor) -> torch.Tensor:
        # The program's shapes are static, batch 1: each image runs on its own.
        if tuple(batch.shape[1:]) != expected[1:]:
            raise ValueError(f"the program takes images of shape {expected[1:]}, these are {tuple(batch.shape[1:])}")
        rows = [method.execute([image[None].to(torch.float32).contiguous()])[0] for image in batch]
        return torch.cat(rows)

    count = getattr(pybindings, "_threadpool_get_thread_count", None)  # experimental API: 0 where it is gone
    return forward, name, int(count()) if count else 0
