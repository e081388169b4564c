"""How much memory a training will take, before it starts: what the job queue admits it by.

Built from what the training code already sizes, never measured by running it:

- the trainable parameters' weight, gradient and AdamW's two moments (core.finetune.depth, 16 bytes
  each), and the copy of the best epoch's state that training keeps (4 more);
- the activations a training step keeps for its backward, which the micro-batches are sized to
  (core.finetune.micro_batch.ACTIVATION_BUDGET), twice over for the backward's own buffers
  (bench/bench_finetune_memory.py: 5 images of 76 MB each grew the process by 721 MB in all);
- the frozen prefix's outputs for every view of every training image and for the validation images,
  where they are cached (core.finetune.deeper, at most PREFIX_CACHE_BUDGET);
- a batch through the frozen network without autograd (its largest activation, in and out);
- the training images, decoded once at the weights' resize size (RGB bytes);
- the shared model's weights where it is not loaded yet (loading it is part of the job).

Shapes come from one forward on the meta device (no weights, no arithmetic) of a private model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch

from core.errors import ZooScopeError
from core.finetune.config import TrainConfig
from core.finetune.deeper import PREFIX_CACHE_BUDGET, caches_prefix
from core.finetune.depth import BYTES_PER_TRAINABLE_PARAMETER, cut_for, meta_model
from core.finetune.micro_batch import ACTIVATION_BUDGET
from core.models.catalog import all_specs
from core.runtime import TORCH_GLOBAL_STATE

MB = 2**20
BEST_STATE_BYTES = 4  # per trainable parameter: the best epoch's weights, kept while later epochs train
BACKWARD_SHARE = 2.0  # a step's peak: the saved activations and about as much again for the backward
FLOAT = 4


@dataclass(frozen=True)
class _Shapes:
    """One image through a network with its head removed, in elements (float32 each)."""

    largest: int  # the largest output of any module
    inputs: dict[str, int]  # each module's input, by path
    features: int  # the network's output: the feature vector


@functools.cache
def _shapes(name: str, size: int) -> _Shapes:
    """One image's shapes at `size` pixels, from a forward of a private meta-device model (its hooks touch
    nothing shared)."""
    model = meta_model(all_specs()[name])
    largest = 0
    inputs: dict[str, int] = {}

    def watch(path: str):
        def pre(module, args):
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if first is not None and path not in inputs:
                inputs[path] = first[0].numel()

        def post(module, args, output):
            nonlocal largest
            if isinstance(output, torch.Tensor) and output.dim() > 0:
                largest = max(largest, output[0].numel())

        return pre, post

    for path, module in model.named_modules():
        pre, post = watch(path)
        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)
    with TORCH_GLOBAL_STATE, torch.no_grad():  # a meta-device forward: torch's process-wide state
        features = model(torch.empty(1, 3, size, size, device="meta"))
    return _Shapes(largest, inputs, features[0].numel())


def training_memory_mb(
    spec_name: str, config: TrainConfig, n_train: int, n_val: int, *, model_loaded: bool = True
) -> float:
    """MiB that training `spec_name` with `config` on `n_train` + `n_val` images needs beyond what the process
    holds now (with the shared model loaded, unless `model_loaded` is False)."""
    spec = all_specs()[spec_name]
    cut = cut_for(spec_name, config.depth)
    size = (config.train_size or spec.input_size) if config.mode != "fast" else spec.input_size
    shapes = _shapes(spec_name, size)
    trainable = cut.trainable_params * (BYTES_PER_TRAINABLE_PARAMETER + BEST_STATE_BYTES)
    frozen_batch = 2 * shapes.largest * FLOAT * min(config.batch_size, n_train + n_val)
    resize = spec.transforms().resize_size[0]
    total = float(trainable + frozen_batch)
    if config.mode != "fast":  # finetune and scratch: images decoded once, a trainable part with activations
        total += n_train * resize * resize * 3 * 4 / 3  # decoded RGB, a 4:3 photo's short side at the resize
        if cut.start is not None:
            total += BACKWARD_SHARE * ACTIVATION_BUDGET
        total += _cached_views(spec_name, cut.start, size, spec.input_size, config, n_train, n_val)
    if not model_loaded:
        total += spec.file_size_mb * MB
    return total / MB


def _cached_views(
    name: str, start: str | None, size: int, own: int, config: TrainConfig, n_train: int, n_val: int
) -> float:
    """Bytes of the prefix's cached outputs (every view of every training image, the validation images)."""
    if start is None:  # the head only: the whole frozen network is the prefix, its output the features
        per_image = _shapes(name, size).features
        scale = 1.0
    else:
        per_image = _shapes(name, size).inputs.get(start, 0)
        scale = (own / size) ** 2
    cut_bytes = per_image * FLOAT * (n_train * config.views + n_val * scale)
    has_prefix = start is None or bool(cut_for(name, config.depth).prefix)
    return min(cut_bytes, PREFIX_CACHE_BUDGET) if caches_prefix(has_prefix, math.ceil(cut_bytes)) else 0.0


def export_memory_mb(spec_name: str) -> float:
    """MiB an ONNX export of a trained model needs: the exporter's graph and constants, the fp32 and int8
    files, and sessions to check them: a few times the model's float32 weights (file size)."""
    return 6 * all_specs()[spec_name].file_size_mb + 256


def measuring_memory_mb(spec_name: str, config: TrainConfig, images: int, *, model_loaded: bool = True) -> float:
    """MiB that timing a step of every depth on `images` images needs (core.finetune.estimate): the
    dearest depth's training on them, each depth's copies freed before the next."""
    from core.finetune.depth import DEPTHS, check_memory

    needs = [0.0]
    for depth in DEPTHS:
        try:
            check_memory(spec_name, cut_for(spec_name, depth))
        except ZooScopeError:
            continue  # a depth refused here is not measured
        finetune = dataclasses.replace(config, mode="finetune", unfreeze=depth, views=1)
        needs.append(training_memory_mb(spec_name, finetune, images, 0, model_loaded=model_loaded))
    return max(needs)
