"""How many images a training step runs through the tail at once, so its memory stays bounded.

A training step keeps every activation the backward needs until the backward has run: for the
last half of efficientnet_lite0 at 224 pixels that is about 24 MB per image, and a batch of 32 grew
the process by about 1 GB with the backward's own buffers (bench/bench_finetune_memory.py), more
than a 2.7 GB host can spare beside the shared models. So a batch is run in micro-
batches, each one's gradients added to the last (gradient accumulation) before the one optimiser
step: with batch-norm statistics frozen (the default) the step is the same as the whole batch's,
up to rounding. When they adapt, each micro-batch's statistics are its own.

What a micro-batch may hold is measured, not guessed: autograd's saved tensors are counted on one
and on two images (saved_tensors_hooks), and the difference is what one more image costs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Activations autograd may keep for one micro-batch's backward.
ACTIVATION_BUDGET = 384 << 20


def saved_bytes(forward: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct tensors autograd saves for the backward of `forward()` (run, then dropped)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(storages.values())


def activation_bytes_per_image(forward: Callable[[slice], torch.Tensor]) -> int:
    """What one more image adds to a step's saved activations: `forward(rows)` runs the trainable part
    with autograd on those rows of a batch of at least two images."""
    one, two = saved_bytes(lambda: forward(slice(0, 1))), saved_bytes(lambda: forward(slice(0, 2)))
    return max(two - one, 1)


def micro_batch_size(per_image: int, batch_size: int, budget: int | None = None) -> int:
    """The most images (at least one, at most the batch) whose activations fit `budget` (ACTIVATION_BUDGET)."""
    budget = ACTIVATION_BUDGET if budget is None else budget
    return max(1, min(batch_size, budget // max(per_image, 1)))


def even_slices(count: int, most: int) -> list[slice]:
    """`count` rows in as few slices of at most `most` as possible, as even as possible (32 by 15:
    11, 11, 10, not 15, 15, 2: a tiny last micro-batch costs nearly a full one's overhead)."""
    parts = -(-count // max(most, 1))
    bounds = [round(i * count / parts) for i in range(parts + 1)]
    return [slice(start, end) for start, end in zip(bounds, bounds[1:], strict=False)]
