"""How a phone app loads a shipped file: a short snippet per format and platform, filled with the model's input.

Each snippet is the real API of the runtime that reads that file, checked against its documentation:

- .onnx and .ort: ONNX Runtime (Android: `com.microsoft.onnxruntime:onnxruntime-android`, whose Kotlin/Java
  API is `ai.onnxruntime`; iOS: the `onnxruntime-objc` pod, Objective-C classes bridged to Swift). The same
  package reads both formats: .ort is the one its reduced (mobile) builds need.
- .pte: ExecuTorch (Android: `org.pytorch:executorch-android`, Java API `org.pytorch.executorch` called from
  Kotlin; iOS: the `executorch` Swift package with `backend_xnnpack`, Swift API `Module` and `Tensor<Float>`).

The templates hold `{size}`, `{mean}`, `{std}` and `{output}` and nothing else in braces is a placeholder
(Kotlin and Swift closures keep theirs), so `snippet` replaces those names rather than calling `str.format`.
"""

from __future__ import annotations

from collections.abc import Sequence

PLATFORMS = ("android", "ios")
PLACEHOLDERS = ("{size}", "{mean}", "{std}", "{output}")

_PIXELS_KOTLIN = """\
val mean = floatArrayOf({mean}); val std = floatArrayOf({std})
// pixels: the photo resized and centre-cropped to {size}x{size}, RGB in 0..1, channel by channel (CHW):
// pixels[c * {size} * {size} + y * {size} + x] = (rgb[c] - mean[c]) / std[c]
val pixels = FloatArray(3 * {size} * {size})
"""

_PIXELS_SWIFT = """\
let mean: [Float] = [{mean}], std: [Float] = [{std}]
// pixels: the photo resized and centre-cropped to {size}x{size}, RGB in 0...1, channel by channel (CHW):
// pixels[c * {size} * {size} + y * {size} + x] = (rgb[c] - mean[c]) / std[c]
var pixels = [Float](repeating: 0, count: 3 * {size} * {size})
"""


def _onnx_runtime(extension: str) -> dict[str, str]:
    android = f"""\
// Gradle: implementation("com.microsoft.onnxruntime:onnxruntime-android:<version>")
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import java.nio.FloatBuffer

{_PIXELS_KOTLIN}val env = OrtEnvironment.getEnvironment()
val session = env.createSession(filesDir.resolve("model.{extension}").path)  // copied there from assets
val input = OnnxTensor.createTensor(env, FloatBuffer.wrap(pixels), longArrayOf(1, 3, {{size}}, {{size}}))
session.run(mapOf("image" to input)).use {{ result ->
    val logits = (result[0].value as Array<FloatArray>)[0]  // "{{output}}", one score per class
}}
"""
    ios = f"""\
// CocoaPods: pod 'onnxruntime-objc'
import onnxruntime_objc

{_PIXELS_SWIFT}let env = try ORTEnv(loggingLevel: .warning)
let path = Bundle.main.path(forResource: "model", ofType: "{extension}")!
let session = try ORTSession(env: env, modelPath: path, sessionOptions: nil)
let data = NSMutableData(bytes: &pixels, length: pixels.count * MemoryLayout<Float>.size)
let input = try ORTValue(tensorData: data, elementType: .float, shape: [1, 3, {{size}}, {{size}}])
let outputs = try session.run(withInputs: ["image": input], outputNames: ["{{output}}"], runOptions: nil)
let scores = try outputs["{{output}}"]!.tensorData() as Data
let logits = scores.withUnsafeBytes {{ Array($0.bindMemory(to: Float.self)) }}  // one score per class
"""
    return {"android": android, "ios": ios}


_EXECUTORCH = {
    "android": f"""\
// Gradle: implementation("org.pytorch:executorch-android:<the ExecuTorch release that wrote the file>")
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

{_PIXELS_KOTLIN}val module = Module.load(filesDir.resolve("model.pte").path)  // copied there from assets
val input = Tensor.fromBlob(pixels, longArrayOf(1, 3, {{size}}, {{size}}))  // the input "image", batch 1
val logits = module.forward(EValue.from(input))[0].toTensor().dataAsFloatArray  // "{{output}}"
val top1 = logits.indices.maxByOrNull {{ logits[it] }}
""",
    "ios": f"""\
// Swift package github.com/pytorch/executorch (branch swiftpm-<release>): executorch, backend_xnnpack,
// kernels_optimized, linked with -all_load
import ExecuTorch

{_PIXELS_SWIFT}let module = Module(filePath: Bundle.main.path(forResource: "model", ofType: "pte")!)
try module.load("forward")
let input = Tensor<Float>(pixels, shape: [1, 3, {{size}}, {{size}}])  // the input "image", batch 1
let output = try Tensor<Float>(module.forward(input))  // "{{output}}"
let logits = output.scalars()  // one score per class
""",
}

SNIPPETS: dict[str, dict[str, str]] = {
    "onnx": _onnx_runtime("onnx"),
    "ort": _onnx_runtime("ort"),
    "pte": _EXECUTORCH,
}


def _floats(values: Sequence[float], platform: str) -> str:
    suffix = "f" if platform == "android" else ""  # Kotlin's floatArrayOf takes Float literals only
    return ", ".join(f"{float(value):g}{suffix}" for value in values)


def snippet(
    format: str, platform: str, *, input_size: int, mean: Sequence[float], std: Sequence[float], output: str = "logits"
) -> str:
    """The code an app on `platform` ("android", "ios") runs to load a `format` file and classify one photo."""
    if format not in SNIPPETS:
        raise ValueError(f"no snippet for {format!r}; formats: {', '.join(SNIPPETS)}")
    if platform not in PLATFORMS:
        raise ValueError(f"no snippet for {platform!r}; platforms: {', '.join(PLATFORMS)}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError("mean and std need one value per colour channel")
    text = SNIPPETS[format][platform]
    for name, value in (
        ("{size}", str(int(input_size))),
        ("{mean}", _floats(mean, platform)),
        ("{std}", _floats(std, platform)),
        ("{output}", output),
    ):
        text = text.replace(name, value)
    return text
