"""int8 that keeps its answers: static int8 in ONNX Runtime (QDQ, per-channel int8 weights, uint8 activations), with
the layers that change the answers left in float, chosen per model by measuring, and the rounding's bias taken back.

The recipe, `quantize_keeping_answers`:

1. Activation ranges: Percentile 99.99 on the calibration images, measured once and reused by every trial.
2. Always float: the first convolution (it reads the image itself) and the classifier (its outputs are the answers).
3. Float where it measures as sensitive. One pass ranks the int8 layers by the signal-to-noise each loses between
   its input and its output. The top few are tried in float one at a time, greedily, judged by the logits
   themselves: int8's squared error against fp32's, relative to each image's spread of logits, on the sensitivity
   images. On the 24 calibration images that error ranks recipes as the held-out KL does (Spearman 0.98, 40
   recipes). A layer stays float only if it cuts the error by a quarter or more; at most `max_kept` do.
4. Bias correction (Nagel et al. 2019): rounding a layer's weights shifts its mean output by (W_int8 - W) . E[x];
   the int32 bias takes that back, E[x] measured in fp32 on the calibration images. Measuring the shift layer by
   layer in the int8 graph did no better, at ten times the cost.
5. ONNX Runtime's basic optimiser (WeightBiasQuantization, 1.31) quantizes, per tensor, the float weights of any
   Conv/Gemm whose input comes from a per-tensor DequantizeLinear: "float" silently undone. Such a layer reads its
   input through its own per-axis DequantizeLinear (the same scale on every channel) instead.

Measured on efficientnet_lite0 against fp32, both in ONNX Runtime. Held out: 12 sample photos of scikit-image,
scikit-learn and matplotlib (astronaut, camera, china, flower, grace_hopper, clock, retina, immunohistochemistry,
page, grass, logo, horse) x check_images()'s 13 variations = 156 images, neither calibrated nor tuned on (choices
were made on other photos); "photos": the first six, what a person might photograph (78). Calibration:
calibration_images() (24). Speed: batch 1, 1 and 2 threads, 2-core AVX2 EPYC, fp32 and int8 timed in turns.

| recipe                                          | held-out  | sure  | photos | check | KL     | speed 1t 2t |
| ----------------------------------------------- | --------- | ----- | ------ | ----- | ------ | ----------- |
| everything int8, MinMax (core.engines.quantize) | 122 (.78) | 20/20 | 67/78  | 36/39 | 0.054  | 2.1x 2.0x   |
| first conv + classifier float                   | 124 (.80) | 20/20 | 65/78  | 37/39 | 0.053  | 2.0x 1.9x   |
| 16 depthwise float, as quantize_static writes   | 75 (.48)  | 20/20 | 52/78  | 30/39 | 0.56   | 1.6x 1.6x   |
| the same, really float (point 5)                | 131 (.84) | 20/20 | 69/78  | 37/39 | 0.034  | 1.2x 0.9x   |
| first conv, classifier, blocks.0.0.conv_dw      | 137 (.88) | 20/20 | 71/78  | 35/39 | 0.026  | 2.0x 2.0x   |
| ... + bias correction                           | 145 (.93) | 20/20 | 75/78  | 37/39 | 0.0057 | 2.0x 2.0x   |
| ... + Percentile 99.99: this recipe             | 147 (.94) | 20/20 | 75/78  | 38/39 | 0.0043 | 2.0x 2.0x   |
| ... calibrated on 117 more (other photos)       | 148 (.95) | 20/20 | 76/78  | 38/39 | 0.0050 |             |
| first 6 layers + classifier, bias-corrected     | 147 (.94) | 20/20 | 75/78  | 37/39 | 0.0033 | 1.7x 1.8x   |

"sure": agreement where fp32 is at least 50% sure; KL: fp32's softmax against int8's, mean over the held-out.

Entropy calibration and MinMax with a moving average did no better than MinMax; 7-bit weights (reduce_range) and
int8 activations were worse or slower in earlier probes; leaving Add in float was worse. Every disagreement
left is a near-tie: fp32's top two logits at most 0.23 apart, and int8's answer is fp32's runner-up or in its
top five. 10% of the held-out images have a gap under 0.1, about int8's noise on it (median 0.08), so 98% of
these images was out of reach for every recipe tried (55% of lite0's work left in float still agreed on 0.96).
On every image fp32 is at least 50% sure of, int8 agrees. The recipe takes about 20 s on 2 cores (lite0).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
from PIL import Image

from core.errors import ZooScopeError
from core.preprocessing import Transform, model_batch
from core.progress import Progress

PERCENTILE = 99.99
MIN_GAIN = 0.25  # a layer stays float only if it cuts the measured logit error by this share
SHORTLIST = 5  # layers tried in float, the most damaging first
SENSITIVITY_IMAGES = 24  # each trial runs these: 24 rank recipes as 156 held-out images do (module docstring)
DAMAGE_IMAGES = 4  # images for the signal-to-noise ranking (every layer's activations are kept for one image)
WEIGHTED = ("Conv", "Gemm", "MatMul")


class Int8Failed(ZooScopeError):
    """This model cannot be quantized with the images given (the message says why)."""


@dataclass(frozen=True)
class KeptFloat:
    node: str  # the node's name in the ONNX graph
    op: str
    reason: str


@dataclass(frozen=True)
class Int8Result:
    path: Path
    method: str  # how the activation ranges were measured, in words
    calibration_images: int
    kept_float: tuple[KeptFloat, ...]


@dataclass(frozen=True)
class _Layer:
    node: str
    op: str
    weight: str  # its fp32 weight initializer
    input: str  # its activation input in the fp32 graph
    output: str
    label: str  # the weight's name without ".weight": the PyTorch module it came from


def quantize_keeping_answers(
    fp32_path: Path,
    out_path: Path,
    calibration: Sequence[Image.Image],
    preprocess: Transform,
    *,
    sensitivity: Sequence[Image.Image] | None = None,
    max_kept: int = 3,
    progress: Progress | None = None,
) -> Int8Result:
    """The int8 version of the classifier exported at `fp32_path`, written to `out_path` (one file), with its first
    convolution, its classifier and at most `max_kept` layers that measure as sensitive left in float.

    Activation ranges and bias correction come from `calibration`. The sensitivity of the layers is measured on
    `sensitivity` (the calibration images when None); neither should be the images the result is then judged on.
    Raises Int8Failed when there are no calibration images or onnxruntime.quantization cannot quantize the graph.
    """
    import onnx

    if not calibration:
        raise Int8Failed("int8 needs at least one calibration image to measure its activation ranges.")
    report = progress or (lambda done, total, message: None)
    total = 4 + SHORTLIST * max_kept  # ranges, ranking, the trials (at most), writing, done
    model = onnx.load(str(fp32_path))
    layers = _layers(model)
    if not layers:
        raise Int8Failed(f"{fp32_path.name} has no convolution or matrix product to quantize.")
    first = next((layer for layer in layers if layer.op == "Conv"), layers[0])
    ends = {
        first.node: "first convolution: it reads the image itself",
        layers[-1].node: "classifier: its outputs are the answers",
    }
    batches = [model_batch([image], preprocess).numpy() for image in calibration]
    judged = [model_batch([image], preprocess).numpy() for image in sensitivity] if sensitivity else batches
    judged = judged[:: -(-len(judged) // SENSITIVITY_IMAGES)]  # at most that many, spread over the set

    with tempfile.TemporaryDirectory(prefix="zooscope-int8-") as scratch:
        report(1, total, "Measuring activation ranges and fp32's mean inputs")
        trials = _Trials(fp32_path, model, layers, batches, np.concatenate(judged), Path(scratch))
        kept = dict(ends)
        best, best_error = trials.quantized(set(kept))
        report(2, total, "Ranking the layers by the noise int8 adds")
        candidates = [name for name in trials.most_damaging(best) if name not in kept][:SHORTLIST] if max_kept else []
        done = 2
        for _ in range(max_kept):  # greedy: the candidate that cuts the error most, while it cuts it enough
            tried = []
            for name in candidates:
                done += 1
                report(min(done, total - 1), total, f"Trying {trials.layers[name].label} in float")
                tried.append((*trials.quantized(set(kept) | {name}), name))
            if not tried:
                break
            model_with, error_with, name = min(tried, key=lambda trial: trial[1])
            if error_with > (1 - MIN_GAIN) * best_error:
                break
            kept[name] = (
                f"sensitive: {trials.describe(name)}; with it in float the int8 logits' squared error on "
                f"{len(judged)} images falls from {best_error:.2%} to {error_with:.2%} of fp32's spread"
            )
            candidates.remove(name)
            best, best_error = model_with, error_with
        report(total - 1, total, "Writing the int8 model")
        onnx.save(best, str(out_path))
        percentile = trials.percentile
    report(total, total, "int8 ready")
    ops = {layer.node: layer.op for layer in layers}
    return Int8Result(
        path=out_path,
        method=_method(percentile),
        calibration_images=len(calibration),
        kept_float=tuple(KeptFloat(node, ops[node], reason) for node, reason in kept.items()),
    )


def _method(percentile: float | None) -> str:
    ranges = f"Percentile {percentile}" if percentile else "MinMax (a tensor too narrow for Percentile's histograms)"
    return f"{ranges} activation ranges, uint8; per-channel int8 weights, bias-corrected"


def _layers(model: Any) -> list[_Layer]:
    """The graph's Conv, Gemm and MatMul nodes with a constant weight, in graph (topological) order."""
    weights = {initializer.name for initializer in model.graph.initializer}
    return [
        _Layer(
            node.name, node.op_type, node.input[1], node.input[0], node.output[0], node.input[1].removesuffix(".weight")
        )
        for node in model.graph.node
        if node.op_type in WEIGHTED and len(node.input) > 1 and node.input[1] in weights
    ]


class _Trials:
    """Quantizations of one fp32 graph with different layers left in float, each scored by its logits' error."""

    def __init__(
        self, fp32_path: Path, model: Any, layers: list[_Layer], batches: list, judged: np.ndarray, folder: Path
    ):
        from onnx import numpy_helper

        from core.engines.sessions import open_session

        self.fp32_path, self.model, self.folder, self.batches = fp32_path, model, folder, batches
        self.layers = {layer.node: layer for layer in layers}
        self.input = model.graph.input[0].name
        weights = {layer.weight for layer in layers}
        self.weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name in weights}
        self.means = _input_means(model, layers, batches, self.input)
        self.judged = judged
        self.percentile: float | None = PERCENTILE
        self.reference = _logits(open_session(fp32_path), self.input, judged)
        self.count = 0

    def describe(self, node: str) -> str:
        """The layer in words: its PyTorch name and, for a convolution, its kind."""
        layer = self.layers[node]
        if layer.op != "Conv":
            return f"{layer.label} ({layer.op})"
        _, per_group, *kernel = self.weights[layer.weight].shape
        kind = "depthwise " if per_group == 1 else "pointwise " if all(k == 1 for k in kernel) else ""
        return f"{layer.label}, a {kind}{'x'.join(map(str, kernel))} convolution"

    def quantized(self, float_nodes: set[str]) -> tuple[Any, float]:
        """The int8 graph with `float_nodes` in float (protected, bias-corrected) and its logits' error."""
        import onnx

        from core.engines.sessions import open_session

        self.count += 1
        path = self.folder / f"trial{self.count}.onnx"
        try:
            _quantize(self.fp32_path, path, self.batches, self.input, sorted(float_nodes), self.folder, self.percentile)
        except Int8Failed:
            if self.count > 1 or self.percentile is None:
                raise
            # Percentile's histograms cannot bin a tensor of (nearly) one value: MinMax ranges then.
            self.percentile = None
            _quantize(self.fp32_path, path, self.batches, self.input, sorted(float_nodes), self.folder, None)
        model = onnx.load(str(path))
        _read_inputs_through_own_dequantize(model, float_nodes)
        _correct_biases(model, self.layers, self.weights, self.means)
        onnx.save(model, str(path))
        error = _logit_error(_logits(open_session(path), self.input, self.judged), self.reference)
        return model, error

    def most_damaging(self, quantized: Any) -> list[str]:
        """The quantized layers, the one that loses the most signal-to-noise between its input and output first."""
        producer = {output: node for node in quantized.graph.node for output in node.output}
        q_nodes = {n.name: n for n in quantized.graph.node}
        names = [name for name, n in q_nodes.items() if name in self.layers and _reads_int8_weights(n, producer)]
        # (fp32 tensor, its int8 counterpart) at each layer's input and output
        pairs = [
            ((self.layers[n].input, q_nodes[n].input[0]), (self.layers[n].output, q_nodes[n].output[0])) for n in names
        ]
        fp32 = _session_with_outputs(self.model, [f for layer in pairs for f, _ in layer])
        # The graph as written, unoptimised: DequantizeLinear -> float op computes what the int8 kernels do.
        int8 = _session_with_outputs(quantized, [q for layer in pairs for _, q in layer], optimise=False)
        signal = np.zeros((len(names), 2))
        noise = np.zeros((len(names), 2))
        for batch in self.batches[:DAMAGE_IMAGES]:
            f = dict(zip([o.name for o in fp32.get_outputs()], fp32.run(None, {self.input: batch}), strict=True))
            q = dict(zip([o.name for o in int8.get_outputs()], int8.run(None, {self.input: batch}), strict=True))
            f[self.input] = q[self.input] = batch
            for row, layer in enumerate(pairs):
                for col, (fp32_tensor, int8_tensor) in enumerate(layer):
                    signal[row, col] += float(np.square(f[fp32_tensor]).sum())
                    noise[row, col] += float(np.square(q[int8_tensor] - f[fp32_tensor]).sum())
        sqnr = 10 * np.log10(np.maximum(signal, 1e-30) / np.maximum(noise, 1e-30))
        damage = np.minimum(sqnr[:, 0], 80.0) - sqnr[:, 1]  # an exactly float input counts as 80 dB
        return [names[i] for i in np.argsort(-damage)]


def _quantize(
    fp32: Path,
    out: Path,
    batches: list,
    input_name: str,
    float_nodes: list[str],
    folder: Path,
    percentile: float | None,
) -> None:
    """quantize_static with `float_nodes` left float; the activation ranges are measured once per method and kept
    in `folder` for the next call."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from core.engines.quantize import calibration_reader, quiet_preprocessing_advice, quiet_stdout

    try:
        # The histogram calibrator prints its progress: kept out of the app's output.
        with quiet_preprocessing_advice(), quiet_stdout():
            quantize_static(
                str(fp32),
                str(out),
                calibration_reader(batches, input_name),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=False,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.Percentile if percentile else CalibrationMethod.MinMax,
                nodes_to_exclude=float_nodes,
                extra_options={"CalibPercentile": percentile} if percentile else {},
                calibration_cache_path=folder / f"ranges-{percentile or 'minmax'}.json",  # measured once, then read
            )
    except Exception as error:  # an operator it cannot quantize, a graph it cannot calibrate
        raise Int8Failed(f"onnxruntime.quantization failed ({type(error).__name__}: {error}).") from error


# --- the graph surgery ---------------------------------------------------------------------------------------------


def _read_inputs_through_own_dequantize(model: Any, float_nodes: set[str]) -> None:
    """Give each float Conv/Gemm that reads a per-tensor DequantizeLinear its own per-axis copy of it (module
    docstring, point 5), so that ONNX Runtime leaves its float weights float."""
    from onnx import helper, numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    producer = {output: node for node in model.graph.node for output in node.output}
    added = {}
    for node in model.graph.node:
        dequantize = producer.get(node.input[0])
        if node.name not in float_nodes or dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        channels = _input_channels(node, initializers)
        scale = initializers.get(dequantize.input[1])
        if channels is None or scale is None or numpy_helper.to_array(scale).size != 1:
            continue
        inputs = [dequantize.input[0]]
        for suffix, name in zip(("scale", "zero_point"), dequantize.input[1:3], strict=False):
            value = numpy_helper.to_array(initializers[name])
            inputs.append(f"{node.name}_input_{suffix}")
            per_channel = np.full(channels, value.item(), value.dtype)
            model.graph.initializer.append(numpy_helper.from_array(per_channel, inputs[-1]))
        output = f"{node.name}_input"
        added[node.name] = helper.make_node("DequantizeLinear", inputs, [output], name=f"{output}_dequantize", axis=1)
        node.input[0] = output
    if added:  # each copy just before its reader: the graph stays in topological order
        nodes = list(model.graph.node)
        del model.graph.node[:]
        for node in nodes:
            if node.name in added:
                model.graph.node.append(added[node.name])
            model.graph.node.append(node)


def _input_channels(node: Any, initializers: dict) -> int | None:
    """The channels of a Conv's or Gemm's activation input (axis 1), from its float weight's shape."""
    from onnx import helper

    if node.input[1] not in initializers:
        return None
    dims = list(initializers[node.input[1]].dims)
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        return int(dims[1] * attributes.get("group", 1))
    if node.op_type == "Gemm" and not attributes.get("transA", 0):
        return int(dims[1] if attributes.get("transB", 0) else dims[0])
    return None


def _correct_biases(model: Any, layers: dict[str, _Layer], weights: dict, means: dict[str, np.ndarray]) -> None:
    """Take each int8 Conv/Gemm's mean output shift, (W_int8 - W) . E[input], back out of its int32 bias."""
    from onnx import numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    producer = {output: node for node in model.graph.node for output in node.output}
    int32 = np.iinfo(np.int32)
    for node in model.graph.node:
        layer = layers.get(node.name)
        if layer is None or node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or layer.input not in means:
            continue
        weight, bias = producer.get(node.input[1]), producer.get(node.input[2])
        if not (_dequantizes_constant(weight, initializers) and _dequantizes_constant(bias, initializers)):
            continue
        shift = _mean_shift(node, _dequantize(weight, initializers) - weights[layer.weight], means[layer.input])
        if shift is None:
            continue
        quantized = numpy_helper.to_array(initializers[bias.input[0]]).astype(np.int64)
        scale = numpy_helper.to_array(initializers[bias.input[1]]).astype(np.float64)
        steps = np.round(np.divide(shift, scale, out=np.zeros_like(shift), where=scale > 0)).astype(np.int64)
        corrected = np.clip(quantized - steps, int32.min, int32.max).astype(np.int32)
        initializers[bias.input[0]].CopyFrom(numpy_helper.from_array(corrected, bias.input[0]))


def _dequantize(node: Any, initializers: dict) -> np.ndarray:
    """A DequantizeLinear of a constant, computed here: the weights int8 actually multiplies by."""
    from onnx import helper, numpy_helper

    values = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
    has_zero = len(node.input) > 2 and node.input[2] in initializers
    zero = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64) if has_zero else np.zeros_like(scale)
    if scale.size > 1:
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * values.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (values - zero) * scale


def _mean_shift(node: Any, delta: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """The change of a Conv's or Gemm's mean output per channel when its weights change by `delta` and its input's
    mean per channel is `mean` (padding's borders aside); None for a layout this does not follow."""
    from onnx import helper

    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        groups, outputs, per_group = attributes.get("group", 1), delta.shape[0], delta.shape[1]
        if mean.size != groups * per_group:
            return None
        summed = delta.reshape(groups, outputs // groups, per_group, -1).sum(-1)
        return np.einsum("gop,gp->go", summed, mean.reshape(groups, per_group)).reshape(outputs)
    if attributes.get("transA", 0) or attributes.get("alpha", 1.0) != 1.0:
        return None
    matrix = delta if attributes.get("transB", 0) else delta.T
    return matrix @ mean if matrix.shape[1] == mean.size else None


def _dequantizes_constant(node: Any, initializers: dict) -> TypeGuard[Any]:
    return node is not None and node.op_type == "DequantizeLinear" and node.input[0] in initializers


def _reads_int8_weights(node: Any, producer: dict) -> bool:
    weight = producer.get(node.input[1]) if len(node.input) > 1 else None
    return weight is not None and weight.op_type == "DequantizeLinear"


# --- running ---------------------------------------------------------------------------------------------------------


def _session_with_outputs(model: Any, tensors: list[str], *, optimise: bool = True) -> Any:
    """An ONNX Runtime session of `model` that also returns `tensors` (the model itself is left as it was)."""
    import onnxruntime
    from onnx import TensorProto, helper

    present = {output.name for output in model.graph.output} | {i.name for i in model.graph.input}
    extra = [
        helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in dict.fromkeys(tensors) if t not in present
    ]
    model.graph.output.extend(extra)
    try:
        serialised = model.SerializeToString()
    finally:
        del model.graph.output[len(model.graph.output) - len(extra) :]
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if not optimise:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return onnxruntime.InferenceSession(serialised, options, providers=["CPUExecutionProvider"])


def _input_means(model: Any, layers: list[_Layer], batches: list, input_name: str) -> dict[str, np.ndarray]:
    """fp32's mean of each Conv/Gemm input, per channel (axis 1), over the batches."""
    tensors = list(dict.fromkeys(layer.input for layer in layers if layer.op in ("Conv", "Gemm")))
    session = _session_with_outputs(model, [t for t in tensors if t != input_name])
    names = [output.name for output in session.get_outputs()]
    sums: dict[str, np.ndarray] = {}
    for batch in batches:
        values = dict(zip(names, session.run(None, {input_name: batch}), strict=True))
        values[input_name] = batch
        for tensor in tensors:
            axes = tuple(axis for axis in range(values[tensor].ndim) if axis != 1)
            sums[tensor] = sums.get(tensor, 0) + values[tensor].astype(np.float64).mean(axis=axes)
    return {tensor: total / len(batches) for tensor, total in sums.items()}


def _logits(session: Any, input_name: str, images: np.ndarray) -> np.ndarray:
    return np.concatenate([session.run(None, {input_name: images[i : i + 16]})[0] for i in range(0, len(images), 16)])


def _logit_error(int8: np.ndarray, fp32: np.ndarray) -> float:
    """Mean over images of the int8 logits' squared error relative to fp32's spread (both centred per image)."""
    reference = fp32 - fp32.mean(axis=1, keepdims=True)
    error = int8 - int8.mean(axis=1, keepdims=True) - reference
    return float((np.square(error).sum(axis=1) / np.maximum(np.square(reference).sum(axis=1), 1e-12)).mean())
