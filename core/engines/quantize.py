"""int8: static quantization of an exported ONNX model, and what it costs, measured.

`onnxruntime.quantization.quantize_static` in QDQ format: weights int8 per output channel,
activations uint8 (ONNX Runtime's recommended pairing on x86), activation ranges from MinMax
calibration on real photos run through the fp32 model. ONNX Runtime fuses each QuantizeLinear /
DequantizeLinear pair around a convolution or matrix product into one int8 kernel.

The CPU here has AVX2 but neither AVX512 nor VNNI, where uint8 x int8 products may saturate and
`reduce_range` (7-bit weights) is the textbook remedy. Measured on efficientnet_lite0: full range
keeps fp32's top-1 on 94.9% of the check images, reduce_range on 84.6%, at about the same speed; so
full range, and every int8 model carries its own measured agreement and speed (core.engines.onnx_engine).
"""

from __future__ import annotations

import contextlib
import io
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: Iterable[np.ndarray], *, input_name: str) -> Path:
    """Write the int8 (QDQ, per-channel) version of the model at `fp32_path` to `int8_path` (one file),
    its activation ranges measured on `calibration`: preprocessed float32 batches, one image each
    (the calibrator keeps every intermediate tensor of a batch: one image keeps that small)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    with quiet_preprocessing_advice():
        quantize_static(
            str(fp32_path),
            str(int8_path),
            calibration_reader(calibration, input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return int8_path


def calibration_reader(batches: Iterable[np.ndarray], input_name: str):
    """onnxruntime.quantization's reader of calibration data: each batch fed as the model's input."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    return Reader()


_STDOUT = threading.Lock()


@contextlib.contextmanager
def quiet_stdout():
    """onnxruntime's calibrator and converter print their progress. sys.stdout is the whole process's, so
    one tool at a time swaps it for a buffer (two swaps interleaved could leave it pointing at a buffer)."""
    with _STDOUT, contextlib.redirect_stdout(io.StringIO()):
        yield


class _DropPreprocessingAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def quiet_preprocessing_advice():
    """quantize_static advises `quant_pre_process` on the root logger. Measured on lite0: the same
    agreement and speed with it, because torch.onnx's optimiser has already folded what it would."""
    advice = _DropPreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(advice)


def median_ms(runs: dict[str, Callable[[], object]], *, repeats: int = 7, warmup: int = 2) -> dict[str, float]:
    """Median wall time in ms of each callable, the callables alternated on every repeat (so a busy
    moment on a shared machine slows them all alike)."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(repeats):
        order = list(runs.items()) if index % 2 == 0 else list(runs.items())[::-1]
        for name, run in order:
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}
