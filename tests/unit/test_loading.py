"""core.models.loading: the fast load (meta build, mmap, assign) must equal torchvision's own load exactly."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import torchvision

from core.engines.handle import ModelHandle
from core.engines.pool import ModelPool
from core.errors import UnknownModel, WeightsUnavailable
from core.models import weights
from core.models.bundled import rename_lite_state_dict
from core.models.catalog import get_spec
from core.models.keys import ModelKey
from core.models.loading import (
    LoadedModel,
    build_model,
    load_model,
    read_state_dict,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_state_dict(build: Callable[[], torch.nn.Module], seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict for the model `build()` makes, every float tensor (BN statistics too) random."""
    try:
        with torch.device("meta"):  # shapes only: skips the random init we would overwrite anyway
            model = build()
    except NotImplementedError:  # regnet computes with tensors while constructing
        model = build()
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            value = torch.rand(tensor.shape, generator=generator) * 0.2 - 0.1
            if key.endswith("running_var"):
                value = value.abs() + 0.5
        else:
            value = torch.zeros(tensor.shape, dtype=tensor.dtype)
        state[key] = value
    return state


def old_densenet_keys(state_dict: dict) -> dict:
    """densenet121-a639ec97.pth names its layers 'norm.1', 'conv.2'... and, older than BatchNorm's
    num_batches_tracked, has none of those: write the file that way."""
    renamed = {}
    for key, tensor in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        for layer in ("norm1", "norm2", "relu1", "relu2", "conv1", "conv2"):
            if f".{layer}." in key and "denselayer" in key:
                key = key.replace(f".{layer}.", f".{layer[:-1]}.{layer[-1]}.")
        renamed[key] = tensor
    return renamed


def file_state_dict(name: str) -> dict[str, torch.Tensor]:
    """A state dict shaped like the real torchvision checkpoint for `name`."""
    if name == "googlenet":
        # The published file keeps the auxiliary heads; torchvision loads them, then drops them.
        return random_state_dict(
            lambda: torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
        )
    state = random_state_dict(get_spec(name).build)
    if name == "densenet121":
        state = old_densenet_keys(state)
        assert "features.denseblock1.denselayer1.norm.1.weight" in state
    return state


@pytest.fixture(scope="module")
def photo_batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    # Small images keep four CNNs' forwards cheap; equal logits are equal at any size.
    return torch.randn(2, 3, 96, 96, generator=generator)


def assert_ready(module: torch.nn.Module):
    assert not module.training and not any(m.training for m in module.modules())
    assert not any(p.requires_grad for p in module.parameters())
    named = [*module.named_parameters(), *module.named_buffers()]
    assert named and not [n for n, t in named if t.is_meta]


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "densenet121", "regnet_x_400mf"])
def test_fast_load_equals_torchvision_load(name, write_torchvision_file, hub_checkpoints, photo_batch):
    spec = get_spec(name)
    state = file_state_dict(name)
    path = write_torchvision_file(name, state, hub_checkpoints)
    assert path.name == spec.file_name

    ours = build_model(spec, read_state_dict(path))
    assert_ready(ours)

    # torchvision's standard load finds the file in the (temp) hub cache and does not re-hash it.
    reference = torchvision.models.get_model(name, weights=spec.weights).eval()
    with torch.inference_mode():
        expected = reference(photo_batch)
        actual = ours(photo_batch)
    assert actual.shape == (2, 1000)
    assert torch.equal(actual, expected)

    # The whole path through load_model (resolve + verify + read + build) gives the same model.
    loaded = load_model(name)
    with torch.inference_mode():
        assert torch.equal(loaded.module(photo_batch), expected)


def test_googlenet_drops_aux_heads_and_keeps_transform_input(write_torchvision_file, hub_checkpoints):
    write_torchvision_file("googlenet", file_state_dict("googlenet"), hub_checkpoints)
    module = load_model("googlenet").module
    assert module.aux1 is None and module.aux2 is None and not module.aux_logits
    assert module.transform_input


def test_regnet_cannot_build_on_meta_but_loads():
    spec = get_spec("regnet_x_400mf")
    with pytest.raises(NotImplementedError), torch.device("meta"):
        spec.build()
    model = build_model(spec, random_state_dict(spec.build, seed=3))
    assert_ready(model)


def test_legacy_format_file_is_read(tmp_path):
    state = {"weight": torch.arange(6.0).reshape(2, 3)}
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert torch.equal(read_state_dict(path)["weight"], state["weight"])


def test_zip_file_is_memory_mapped(tmp_path):
    path = tmp_path / "new.pth"
    torch.save({"weight": torch.ones(1000)}, path)
    tensor = read_state_dict(path)["weight"]
    # An mmap'd tensor's memory lies inside a mapping of the file, not in a private allocation.
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs Linux /proc")
    regions = []
    for line in maps.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            regions.append((start, end))
    assert any(start <= tensor.data_ptr() < end for start, end in regions), regions
    assert torch.equal(tensor, torch.ones(1000))


def test_lite0_is_ready(lite0):
    assert isinstance(lite0, LoadedModel)
    assert lite0.name == "efficientnet_lite0" and lite0.device == torch.device("cpu")
    assert lite0.categories == get_spec("efficientnet_lite0").categories
    assert_ready(lite0.module)


def test_lite0_key_renaming_is_exact():
    spec = get_spec("efficientnet_lite0")
    raw = read_state_dict(weights.find_local(spec))
    assert any(k.startswith("_blocks.") for k in raw)  # the efficientnet_pytorch layout
    with torch.device("meta"):
        model = spec.build()
    renamed = rename_lite_state_dict(raw, model)
    assert len(renamed) == len(raw)
    assert set(renamed) == set(model.state_dict())
    for key, tensor in renamed.items():
        assert tensor.shape == model.state_dict()[key].shape, key
    build_model(spec, raw)  # strict=True inside: raises on any missing or unexpected key


def test_load_unknown_model():
    with pytest.raises(UnknownModel):
        load_model("not_a_model")


def test_load_reports_progress(lite0):
    calls = []
    load_model("efficientnet_lite0", progress=lambda *a: calls.append(a))
    assert calls == [(0, 1, "Loading efficientnet_lite0")]


# --- bad files ----------------------------------------------------------------------------------


def test_corrupt_file_is_weights_unavailable(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsUnavailable, match="corrupt.pth"):
        read_state_dict(path)


def test_truncated_zip_file_is_weights_unavailable(tmp_path):
    path = tmp_path / "truncated.pth"
    torch.save({"weight": torch.ones(10_000)}, path)
    path.write_bytes(path.read_bytes()[:20_000])
    with pytest.raises(WeightsUnavailable, match="truncated.pth"):
        read_state_dict(path)


def test_corrupt_file_with_verified_name_fails_load(write_torchvision_file, hub_checkpoints):
    # The hash matches (the file is what its name declares) but it is no checkpoint.
    path = write_torchvision_file("resnet18", os.urandom(4096), hub_checkpoints)
    weights.verify_file(path)
    with pytest.raises(WeightsUnavailable, match="could not be read") as info:
        load_model("resnet18")
    assert str(path) in str(info.value)


def test_wrong_architecture_in_file_is_refused(write_torchvision_file, hub_checkpoints):
    write_torchvision_file("resnet18", random_state_dict(get_spec("resnet34").build), hub_checkpoints)
    with pytest.raises((RuntimeError, WeightsUnavailable), match="Unexpected key"):
        load_model("resnet18")  # refused, never half loaded


class CreatesFile:
    """Unpickling this calls open(marker, "w"): code execution from a weights file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_code_in_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.ones(2), "payload": CreatesFile(marker)}, path)

    with pytest.raises(WeightsUnavailable, match="evil.pth"):
        read_state_dict(path)
    assert not marker.exists()

    # Control: the payload is live; an unsafe load would have run it.
    control_marker = tmp_path / "control"
    control = tmp_path / "control.pth"
    torch.save({"payload": CreatesFile(control_marker)}, control)
    torch.load(control, weights_only=False)
    assert control_marker.exists()


# --- the pool -----------------------------------------------------------------------------------


R18, VGG = ModelKey("resnet18"), ModelKey("vgg16")


def fake_loaded(name: str, device) -> LoadedModel:
    return LoadedModel(spec=get_spec(name), module=torch.nn.Identity(), preprocess=torch.nn.Identity(), device=device)


class FakeLoader:
    def __init__(self, delay: float = 0.2):
        self.calls: list[str] = []
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, key, device, *, progress=None):
        with self._lock:
            self.calls.append(key.name)
        time.sleep(self.delay)  # long enough for every thread to arrive while it loads
        return fake_loaded(key.name, device)


def test_pool_loads_once_under_concurrency():
    loader = FakeLoader()
    pool = ModelPool(loader=loader)
    barrier = threading.Barrier(8)

    def get(_):
        barrier.wait()
        return pool.get(R18)

    with ThreadPoolExecutor(8) as executor:
        models = list(executor.map(get, range(8)))
    assert loader.calls == ["resnet18"]
    assert all(m is models[0] for m in models)
    assert pool.loaded() == [R18]


def test_pool_loads_different_models_in_parallel():
    loader = FakeLoader(delay=0.6)
    pool = ModelPool(loader=loader)
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as executor:
        list(executor.map(pool.get, [R18, VGG]))
    assert time.perf_counter() - start < 1.1  # one name's lock does not hold up another name
    assert sorted(loader.calls) == ["resnet18", "vgg16"]


def test_pool_loaded_order_and_unload():
    loader = FakeLoader(delay=0)
    pool = ModelPool(loader=loader)
    first = pool.get(R18)
    pool.get(VGG)
    assert pool.loaded() == [R18, VGG]
    assert pool.get(R18) is first  # cached: no second load
    assert pool.loaded() == [VGG, R18]  # most recently used last
    assert loader.calls == ["resnet18", "vgg16"]

    pool.unload(VGG)
    assert pool.loaded() == [R18]
    pool.unload(ModelKey("never_loaded"))  # harmless
    pool.unload()
    assert pool.loaded() == []
    pool.get(R18)
    assert loader.calls == ["resnet18", "vgg16", "resnet18"]


def test_pool_passes_device_and_progress():
    seen = []

    def loader(key, device, *, progress=None):
        seen.append((key, device, progress))
        return fake_loaded(key.name, device)

    def report(*args):
        return None

    ModelPool("cpu", loader=loader).get(R18, progress=report)
    assert seen == [(R18, torch.device("cpu"), report)]


def test_pool_failed_load_is_not_cached():
    attempts = []

    def loader(key, device, *, progress=None):
        attempts.append(key)
        raise WeightsUnavailable("nope")

    pool = ModelPool(loader=loader)
    for _ in range(2):
        with pytest.raises(WeightsUnavailable):
            pool.get(R18)
    assert attempts == [R18, R18]
    assert pool.loaded() == []


def test_pool_default_loader_loads_model_handles():
    pool = ModelPool()
    key = ModelKey("efficientnet_lite0", "torch")  # PyTorch itself: no export here
    model = pool.get(key)
    assert isinstance(model, ModelHandle) and isinstance(model.torch, LoadedModel) and model.runtime == "torch"
    assert pool.get(key) is model
