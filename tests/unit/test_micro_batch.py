"""Training steps in micro-batches: what autograd keeps per image is measured, and a batch split in
micro-batches trains the same model as the whole batch at once (batch norm frozen)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from core.datasets.labelled import dataset_from_uploads
from core.finetune import micro_batch
from core.finetune.config import TrainConfig
from core.finetune.extraction import FeatureCache
from core.finetune.micro_batch import activation_bytes_per_image, even_slices, micro_batch_size, saved_bytes
from core.finetune.train import train
from tests.glyphs import glyph_uploads

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_saved_bytes_count_the_activations_autograd_keeps_for_the_backward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 1000), nn.ReLU(), nn.Linear(1000, 10))
    batch = torch.randn(8, 100)
    # Per image: the ReLU's output (1000 float32), which the ReLU and the second Linear both save;
    # the weights and the input batch are saved too, but they do not grow with the images.
    assert activation_bytes_per_image(lambda rows: model(batch[rows])) == 1000 * 4
    assert saved_bytes(lambda: model(batch[:4])) - saved_bytes(lambda: model(batch[:2])) == 2 * 1000 * 4
    with torch.no_grad():
        assert saved_bytes(lambda: model(batch)) == 0  # nothing kept without autograd


@pytest.mark.parametrize(
    ("per_image", "batch_size", "budget", "expected"),
    [(10, 32, 1000, 32), (100, 32, 1000, 10), (5000, 32, 1000, 1), (0, 8, 1000, 8)],
)
def test_micro_batches_fit_the_budget_within_one_batch(per_image, batch_size, budget, expected):
    assert micro_batch_size(per_image, batch_size, budget) == expected


@pytest.mark.parametrize(("count", "most"), [(32, 15), (32, 32), (32, 1), (7, 3), (1, 8), (31, 10)])
def test_a_batch_is_cut_in_as_few_and_as_even_micro_batches_as_fit(count, most):
    slices = even_slices(count, most)
    sizes = [s.stop - s.start for s in slices]
    assert sum(sizes) == count and slices[0].start == 0 and slices[-1].stop == count
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:], strict=False))
    assert max(sizes) <= most and len(slices) == -(-count // most) and max(sizes) - min(sizes) <= 1


def test_a_batch_in_micro_batches_trains_the_model_the_whole_batch_would(lite0, monkeypatch):
    dataset = dataset_from_uploads(glyph_uploads(6, classes=3))
    config = TrainConfig(
        mode="finetune", unfreeze="last", epochs=2, head_epochs=2, batch_size=8, views=1, train_size=96
    )
    sizes: list[int] = []

    def spy(per_image: int, batch_size: int, budget: int | None = None) -> int:
        sizes.append(micro_batch_size(per_image, batch_size, budget))
        return sizes[-1]

    monkeypatch.setattr("core.finetune.deeper.micro_batch_size", spy)
    whole = train(lite0, dataset, config, cache=FeatureCache())
    monkeypatch.setattr(micro_batch, "ACTIVATION_BUDGET", 1)  # one image at a time
    split = train(lite0, dataset, config, cache=FeatureCache())
    assert sizes == [8, 1]
    for a, b in zip(whole.history, split.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-4)
    for path, module in whole.tuned.items():
        for (name, ours), theirs in zip(
            module.state_dict().items(), split.tuned[path].state_dict().values(), strict=True
        ):
            assert torch.allclose(ours, theirs, atol=1e-4), (path, name)  # rounding, through AdamW
    assert torch.allclose(whole.head.weight, split.head.weight, atol=1e-4)
