"""int8 that keeps its answers (core.shrink.int8): which layers stay float, that they really do in ONNX Runtime, and
how often int8 still gives fp32's answer on photos it was neither calibrated nor tuned on."""

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from core.datasets.check_images import calibration_images, check_images
from core.engines.onnx_export import export_module
from core.engines.sessions import session_forward
from core.errors import ZooScopeError
from core.models.catalog import get_spec
from core.models.loading import load_model
from core.preprocessing import model_batch
from core.shrink import int8
from core.shrink.int8 import quantize_keeping_answers


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    loaded = load_model("efficientnet_lite0")  # the bundled real weights
    folder = tmp_path_factory.mktemp("lite0")
    fp32 = export_module(loaded.module, loaded.spec.input_size, folder / "fp32.onnx")
    steps = []
    result = quantize_keeping_answers(
        fp32, folder / "int8.onnx", calibration_images(), loaded.preprocess, progress=lambda *step: steps.append(step)
    )
    return loaded, fp32, result, steps


def weight_producers(path):
    model = onnx.load(str(path), load_external_data=False)
    producer = {output: node.op_type for node in model.graph.node for output in node.output}
    return {node.name: (node.op_type, producer.get(node.input[1], "initializer")) for node in model.graph.node}


def as_onnx_runtime_runs_it(path, folder):
    """The graph after ONNX Runtime's basic optimisations (where it quantizes float weights on its own)."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folder / "as-run.onnx")
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return weight_producers(folder / "as-run.onnx")


def test_the_first_convolution_the_classifier_and_the_sensitive_layers_stay_float(lite0, tmp_path):
    _, fp32, result, steps = lite0
    fp32_nodes = onnx.load(str(fp32), load_external_data=False).graph.node
    first_conv = next(node.name for node in fp32_nodes if node.op_type == "Conv")
    classifier = next(node.name for node in fp32_nodes if node.op_type == "Gemm")
    reasons = {kept.node: kept.reason for kept in result.kept_float}
    assert reasons[first_conv].startswith("first convolution") and reasons[classifier].startswith("classifier")
    sensitive = [kept for kept in result.kept_float if kept.reason.startswith("sensitive")]
    assert 1 <= len(sensitive) <= 3  # lite0's first depthwise layer, measured
    fp32_ops = {node.name: node.op_type for node in fp32_nodes}
    written, run = weight_producers(result.path), as_onnx_runtime_runs_it(result.path, tmp_path)
    for kept in result.kept_float:
        assert fp32_ops[kept.node] == kept.op
        assert written[kept.node] == (kept.op, "initializer") and run[kept.node] == (kept.op, "initializer")
    quantized = [name for name, (op, weight) in written.items() if op == "Conv" and weight == "DequantizeLinear"]
    assert len(quantized) >= 0.9 * (sum(op == "Conv" for op in fp32_ops.values()) - 2)  # the rest is int8
    assert result.calibration_images == 24 and "Percentile" in result.method
    assert steps[-1][0] == steps[-1][1] and all(a[0] <= b[0] for a, b in zip(steps, steps[1:], strict=False))


def test_int8_gives_fp32s_answer_on_the_check_images_and_on_every_one_fp32_is_sure_of(lite0):
    loaded, fp32, result, _ = lite0
    batch = model_batch(check_images(), loaded.preprocess)  # variations the calibration never saw
    reference, quantized = session_forward(fp32)(batch), session_forward(result.path)(batch)
    same = reference.argmax(1) == quantized.argmax(1)
    assert same.sum() >= 37  # measured 38 of 39; everything int8 (core.engines.quantize's recipe) 36
    sure = torch.softmax(reference, 1).amax(1) >= 0.5
    assert sure.sum() >= 15 and same[sure].all()  # what int8 loses is near-ties


def test_a_float_layer_after_an_int8_one_is_not_quantized_by_onnx_runtime_behind_our_back(lite0, tmp_path):
    loaded, fp32, _, _ = lite0
    nodes = onnx.load(str(fp32), load_external_data=False).graph.node
    middle = [node.name for node in nodes if node.op_type == "Conv"][5]  # its input is int8's output
    batches = [model_batch([image], loaded.preprocess).numpy() for image in calibration_images()[:4]]
    written = tmp_path / "int8.onnx"
    int8._quantize(fp32, written, batches, "image", [middle], tmp_path, None)
    assert weight_producers(written)[middle][1] == "initializer"
    assert as_onnx_runtime_runs_it(written, tmp_path)[middle][1] == "DequantizeLinear"  # ONNX Runtime quantized it
    model = onnx.load(str(written))
    int8._read_inputs_through_own_dequantize(model, {middle})
    protected = tmp_path / "protected.onnx"
    onnx.save(model, str(protected))
    assert as_onnx_runtime_runs_it(protected, tmp_path)[middle][1] == "initializer"


def test_a_random_weight_resnet18_quantizes_to_under_a_third_of_its_size(tmp_path):
    spec = get_spec("resnet18")
    fp32 = export_module(spec.build().eval(), spec.input_size, tmp_path / "fp32.onnx")
    preprocess = load_model("efficientnet_lite0").preprocess
    result = quantize_keeping_answers(fp32, tmp_path / "int8.onnx", calibration_images()[:8], preprocess, max_kept=1)
    assert {kept.reason.split(":")[0] for kept in result.kept_float} >= {"first convolution", "classifier"}
    fp32_bytes = fp32.stat().st_size + (tmp_path / "fp32.onnx.data").stat().st_size
    assert result.path.stat().st_size < fp32_bytes / 3
    logits = session_forward(result.path)(torch.rand(2, 3, 224, 224))
    assert logits.shape == (2, 1000) and np.isfinite(logits.numpy()).all()


def test_no_calibration_images_is_a_message_not_a_traceback(tmp_path):
    with pytest.raises(ZooScopeError, match="calibration image"):
        quantize_keeping_answers(tmp_path / "model.onnx", tmp_path / "int8.onnx", [], lambda image: image)
