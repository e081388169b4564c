"""Recovery after pruning (core.shrink.recover): a short training on a copy that wins back answers, never
touching the modules it was given."""

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from core.datasets.check_images import calibration_images, check_images
from core.errors import ZooScopeError
from core.models.catalog import get_spec
from core.models.loading import load_model
from core.preprocessing import model_batch
from core.shrink.prune import prune_channels
from core.shrink.recover import recover_by_distillation, recover_with_labels

TEXTURES = Path(__file__).resolve().parents[2] / "assets" / "datasets" / "textures"
SPEC = get_spec("efficientnet_lite0")  # its augmentation and input size; the small nets below take them


def state_of(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (batch-norm statistics too), cloned."""
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def same_state(module: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    now = module.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[name], value) for name, value in state.items())


def is_eval_and_frozen(module: nn.Module) -> bool:
    return not any(layer.training for layer in module.modules()) and not any(
        p.requires_grad for p in module.parameters()
    )


def small_net(classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return (
        nn.Sequential(
            nn.Conv2d(3, 8, 7, stride=4, padding=3),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(16, classes),
        )
        .eval()
        .requires_grad_(False)
    )  # as pruning leaves a module


@pytest.fixture(scope="module")
def textures() -> tuple[list[Image.Image], list[int]]:
    """Six greyscale tiles each of brick (0) and grass (1): two textures no one confuses."""
    images, labels = [], []
    for label, name in enumerate(["brick", "grass"]):
        for path in sorted((TEXTURES / name).glob("*.png"))[:6]:
            with Image.open(path) as opened:
                images.append(opened.copy())
            labels.append(label)
    return images, labels


def test_distilling_half_pruned_efficientnet_lite0_brings_back_agreement_with_its_teacher():
    loaded = load_model("efficientnet_lite0")  # the bundled real weights: the teacher
    pruned = prune_channels(loaded.spec, loaded.module, 0.5)
    teacher_state, pruned_state = state_of(loaded.module), state_of(pruned.module)
    check = model_batch(check_images(), loaded.preprocess)  # photos distillation never sees
    with torch.no_grad():
        wanted = loaded.module(check).argmax(dim=1)
        before = float((pruned.module(check).argmax(dim=1) == wanted).float().mean())

    recovery = recover_by_distillation(pruned.module, loaded.module, loaded.spec, calibration_images(), epochs=2)

    with torch.no_grad():
        after = float((recovery.module(check).argmax(dim=1) == wanted).float().mean())
    assert after > before + 0.1, (before, after)
    assert recovery.losses[-1] < recovery.losses[0]  # the KL divergence to the teacher falls
    assert (recovery.kind, recovery.images, recovery.epochs_run, recovery.stopped) == ("distillation", 24, 2, False)
    assert recovery.module is not pruned.module and is_eval_and_frozen(recovery.module)
    assert same_state(pruned.module, pruned_state) and same_state(loaded.module, teacher_state)
    assert not loaded.module.training


def test_fine_tuning_on_two_textures_learns_them_on_a_copy(textures):
    images, labels = textures
    given = small_net(2)
    state = state_of(given)
    batch, targets = model_batch(images, SPEC.transforms()), torch.tensor(labels)

    def loss_and_accuracy(module: nn.Module) -> tuple[float, float]:
        with torch.no_grad():
            logits = module(batch)
        return float(F.cross_entropy(logits, targets)), float((logits.argmax(dim=1) == targets).float().mean())

    loss_before, _ = loss_and_accuracy(given)
    recovery = recover_with_labels(given, SPEC, images, labels, epochs=10, batch_size=4, lr=1e-2)
    loss_after, accuracy_after = loss_and_accuracy(recovery.module)

    assert loss_after < 0.75 * loss_before and accuracy_after >= 0.9, (loss_before, loss_after, accuracy_after)
    assert (recovery.kind, recovery.images, recovery.epochs_run, len(recovery.losses)) == ("fine-tune", 12, 10, 10)
    assert same_state(given, state) and is_eval_and_frozen(given)
    assert is_eval_and_frozen(recovery.module)
    assert all(layer.momentum == 0.1 for layer in recovery.module.modules() if isinstance(layer, nn.BatchNorm2d))


def test_the_same_seed_gives_the_same_recovery_and_another_seed_another(textures):
    images, _ = textures
    student, teacher = small_net(3, seed=1), small_net(3, seed=2)
    runs = [recover_by_distillation(student, teacher, SPEC, images, epochs=2, batch_size=4, seed=s) for s in (0, 0, 1)]
    assert runs[0].losses == runs[1].losses and same_state(runs[1].module, state_of(runs[0].module))
    assert runs[2].losses != runs[0].losses


def test_should_stop_ends_it_after_the_first_step(textures):
    images, labels = textures
    reports: list[tuple[int, int]] = []
    recovery = recover_with_labels(
        small_net(2), SPEC, images, labels, epochs=3, batch_size=4,
        progress=lambda done, total, message: reports.append((done, total)), should_stop=lambda: True,
    )  # fmt: skip
    assert recovery.stopped and recovery.epochs_run == 1 and len(recovery.losses) == 1
    assert reports == [(1, 9)]  # 3 batches of 4 images in each of 3 epochs; only the first ran
    assert is_eval_and_frozen(recovery.module)


@pytest.mark.parametrize("mode", [torch.inference_mode, torch.no_grad])
def test_it_trains_when_the_caller_holds_inference_or_no_grad_mode(textures, mode):
    images, labels = textures
    given = small_net(2)
    with mode():
        recovery = recover_with_labels(given, SPEC, images, labels, epochs=1, batch_size=6)
    assert not torch.equal(recovery.module[0].weight, given[0].weight)  # its weights moved


def test_a_teacher_left_in_training_mode_teaches_without_changing(textures):
    images, _ = textures
    teacher = small_net(3, seed=2).train()
    state = state_of(teacher)
    recover_by_distillation(small_net(3, seed=1), teacher, SPEC, images, epochs=1, batch_size=6)
    assert same_state(teacher, state) and teacher.training  # its batch-norm statistics did not move


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (0, [], "at least 2 images"),
        (4, [0, 1, 0], "4 images but 3 labels"),
        (4, [0, 0, 0, 0], "Class 1 has no images"),
        (4, [0, 1, 2, 1], r"2 classes \(0 to 1\); labels \[2\]"),
    ],
)
def test_bad_labelled_inputs_are_a_message(textures, images, labels, message):
    with pytest.raises(ZooScopeError, match=message):
        recover_with_labels(small_net(2), SPEC, textures[0][:images], labels)


def test_bad_distillation_inputs_are_a_message(textures):
    images, _ = textures
    with pytest.raises(ZooScopeError, match="at least 2 images"):
        recover_by_distillation(small_net(3), small_net(3), SPEC, [])
    with pytest.raises(ZooScopeError, match="gives 3 outputs but the teacher 5"):
        recover_by_distillation(small_net(3), small_net(5), SPEC, images)
    with pytest.raises(ValueError, match="temperature"):
        recover_by_distillation(small_net(3), small_net(3), SPEC, images, temperature=0)
