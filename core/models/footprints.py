"""What a piece of heavy work will hold in memory, estimated before it starts: what the queue admits it by.

Plain numbers in, MiB out (a model's parameter count, input size and family come from the catalogue
at the caller), so the estimate costs nothing: no model is built or traced to make it.

- Weights: float32, 4 bytes a parameter, counted only where the work loads them (a model already in
  the shared pool is in the process's resident memory, which the queue reads anyway).
- Activations of an inference forward: the peak growth of resident memory per image, measured
  (bench/bench_footprints.py) and kept in the family table as float32 elements per input pixel
  (core.models.families: `activation_elements`, `attention_quadratic`): VGG's full-resolution
  64-channel maps are the widest; ViT's attention grows with the square of the tokens.
- A backward (Grad-CAM) keeps every activation until it has run: BACKWARD_FACTOR times the
  forward's peak (the saved tensors of a whole network against its few live ones).
- Results: n x d float32 for embeddings, plus their thumbnails.
"""

from __future__ import annotations

from core.models.families import traits

BYTES_PER_FLOAT = 4
MIB = 2**20
MEASURED_AT = 224  # the input side the per-pixel factors were measured at

BACKWARD_FACTOR = 8  # a backward's saved activations against a forward's peak (whole network, batch 1)
EXPORT_WEIGHT_COPIES = 3  # torch.export's graph, the ONNX model in memory, the session that checks it
INT8_WEIGHT_COPIES = 2  # the fp32 session that calibrates and measures, the int8 one
CALIBRATION_IMAGES = 16  # about what ONNX Runtime's calibration holds outputs for at once (core.datasets)


def weights_mb(params: int) -> float:
    """float32 weights of a model with `params` parameters."""
    return params * BYTES_PER_FLOAT / MIB


def activations_mb(input_size: int, family: str, batch: int = 1) -> float:
    """Peak activations of an inference forward of `batch` images at `input_size` pixels square."""
    family_traits = traits(family)
    per_pixel: float = family_traits.activation_elements
    if family_traits.attention_quadratic:
        per_pixel *= max(input_size / MEASURED_AT, 1.0) ** 2
    return batch * input_size * input_size * per_pixel * BYTES_PER_FLOAT / MIB


def embedding_mb(
    *,
    params: int,
    input_size: int,
    family: str,
    images: int,
    dimensions: int,
    batch: int,
    thumbnail_side: int = 0,
    weights_loaded: bool = True,
) -> float:
    """Embedding `images` images, `batch` at a time: the forward's activations, the (n, d) float32
    result and RGB thumbnails (and the weights where they are not loaded yet)."""
    result = images * (dimensions * BYTES_PER_FLOAT + 3 * thumbnail_side * thumbnail_side) / MIB
    loading = 0.0 if weights_loaded else weights_mb(params)
    return loading + activations_mb(input_size, family, min(batch, max(images, 1))) + result


def stage_maps_mb(*, input_size: int, family: str) -> float:
    """One photo through a private view with every stage hooked: a forward's peak, and every stage's output
    alive at once at most as long again (the hooks reduce each to its maps)."""
    return 2 * activations_mb(input_size, family)


def grad_cam_mb(*, input_size: int, family: str) -> float:
    """Grad-CAM of one photo: a forward and a backward (models explained one after another: the caller
    passes the largest one's input size and family)."""
    return BACKWARD_FACTOR * activations_mb(input_size, family)


def export_mb(*, params: int, input_size: int, family: str, engine: str, weights_loaded: bool = False) -> float:
    """A first ONNX export and its check against PyTorch (engine "onnx"), and for "int8" its quantization,
    calibration and measurement too; the weights themselves where they are not loaded yet."""
    weights = weights_mb(params)
    need = EXPORT_WEIGHT_COPIES * weights + activations_mb(input_size, family, batch=8)
    if engine == "int8":
        need += INT8_WEIGHT_COPIES * weights + CALIBRATION_IMAGES * activations_mb(input_size, family)
    return need + (0.0 if weights_loaded else weights)
