"""core.engines.pool.ModelPool under a memory budget: LRU eviction, callbacks, oversized models, threads.

A fake loader hands out stand-ins with a chosen `memory_mb`, and the pool's size estimate is a
table lookup, so no test here needs real weights (except the two that measure a real model).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import torch

from core.engines import pool as pool_module
from core.engines.pool import ModelPool
from core.errors import WeightsUnavailable
from core.models.catalog import get_spec
from core.models.keys import ModelKey
from core.models.loading import LoadedModel
from core.runtime import DEFAULT_MEMORY_BUDGET_MB, MEMORY_BUDGET_ENV

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _no_budget_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)


@dataclass(frozen=True)
class FakeModel:
    name: str
    memory_mb: float


class FakeLoader:
    """Loads instantly (or after `delay`) a FakeModel of the size in `sizes`; records every call."""

    def __init__(self, sizes: dict[str, float], delay: float = 0.0):
        self.sizes = sizes
        self.delay = delay
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, name, device, *, progress=None):
        with self._lock:
            self.calls.append(name)
        time.sleep(self.delay)
        return FakeModel(name, self.sizes[name])


def make_pool(sizes: dict[str, float], budget_mb: float, *, estimates: dict[str, float] | None = None, delay=0.0):
    loader = FakeLoader(sizes, delay)
    estimates = sizes if estimates is None else estimates
    return ModelPool(loader=loader, budget_mb=budget_mb, estimate_mb=estimates.__getitem__), loader


def get_all(pool: ModelPool, names: list[str]) -> list[str]:
    evicted: list[str] = []
    for name in names:
        pool.get(name, on_evict=evicted.append)
    return evicted


# --- the budget itself ----------------------------------------------------------------------------


def test_budget_defaults_to_1500_mb():
    assert DEFAULT_MEMORY_BUDGET_MB == 1500
    assert ModelPool().budget_mb == 1500


@pytest.mark.parametrize(("value", "expected"), [("250", 250.0), (" 99.5 ", 99.5), ("", 1500.0)])
def test_budget_read_from_env(monkeypatch, value, expected):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, value)
    assert ModelPool().budget_mb == expected


@pytest.mark.parametrize("value", ["lots", "0", "-5", "nan"])
def test_bad_env_budget_falls_back_to_default(monkeypatch, caplog, value):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, value)
    with caplog.at_level(logging.WARNING, logger="core.runtime"):
        assert ModelPool().budget_mb == DEFAULT_MEMORY_BUDGET_MB
    assert MEMORY_BUDGET_ENV in caplog.text


def test_explicit_budget_wins_over_env(monkeypatch):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "250")
    assert ModelPool(budget_mb=42).budget_mb == 42


def test_env_is_read_at_construction(monkeypatch):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "300")
    pool = ModelPool()
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "600")
    assert pool.budget_mb == 300


def test_default_estimate_is_the_weights_file_size():
    assert pool_module.file_size_estimate_mb(ModelKey("vgg16")) == get_spec("vgg16").file_size_mb > 500
    # int8 weights: a quarter of the file
    assert pool_module.file_size_estimate_mb(ModelKey("vgg16", "int8")) == get_spec("vgg16").file_size_mb / 4


def test_default_estimate_decides_eviction():
    # Real catalogue sizes (resnet18 ~45 MB, vgg16 ~528 MB), fake loads: vgg16 does not fit beside.
    resnet18, vgg16 = ModelKey("resnet18"), ModelKey("vgg16")
    loader = FakeLoader({resnet18: 45.0, vgg16: 528.0})
    pool = ModelPool(loader=loader, budget_mb=550)
    assert get_all(pool, [resnet18, vgg16]) == [resnet18]
    assert pool.loaded() == [vgg16]


def test_a_model_and_its_int8_variant_are_two_entries():
    fp32, int8 = ModelKey("resnet18"), ModelKey("resnet18", "int8")
    loader = FakeLoader({fp32: 45.0, int8: 12.0})
    pool = ModelPool(loader=loader, budget_mb=100)
    assert get_all(pool, [fp32, int8, fp32]) == []
    assert pool.loaded() == [int8, fp32] and loader.calls == [fp32, int8]
    assert pool.used_mb() == pytest.approx(57.0)


# --- least recently used ------------------------------------------------------------------------


def test_used_mb_sums_loaded_models():
    pool, _ = make_pool({"a": 10.0, "b": 25.5}, budget_mb=100)
    assert pool.used_mb() == 0
    get_all(pool, ["a", "b"])
    assert pool.used_mb() == pytest.approx(35.5)
    pool.unload("a")
    assert pool.used_mb() == pytest.approx(25.5)
    pool.unload()
    assert pool.used_mb() == 0


def test_everything_fits_nothing_evicted():
    pool, loader = make_pool({"a": 30.0, "b": 30.0, "c": 40.0}, budget_mb=100)
    assert get_all(pool, ["a", "b", "c"]) == []  # exactly at the budget is within it
    assert pool.loaded() == ["a", "b", "c"]
    assert loader.calls == ["a", "b", "c"]


def test_tiny_budget_evicts_oldest_first():
    pool, loader = make_pool(dict.fromkeys("abcd", 20.0), budget_mb=45)
    assert get_all(pool, ["a", "b", "c", "d"]) == ["a", "b"]
    assert pool.loaded() == ["c", "d"]
    assert pool.used_mb() <= pool.budget_mb
    assert loader.calls == ["a", "b", "c", "d"]


def test_recent_get_protects_a_model():
    pool, loader = make_pool(dict.fromkeys("abc", 40.0), budget_mb=100)
    evicted = get_all(pool, ["a", "b", "a", "c"])  # a used again after b: b is now the oldest
    assert evicted == ["b"]
    assert pool.loaded() == ["a", "c"]
    assert loader.calls == ["a", "b", "c"]  # the second get of a was served from the pool


def test_evicts_as_many_as_needed_in_lru_order():
    pool, _ = make_pool({"a": 10.0, "b": 10.0, "c": 10.0, "big": 85.0}, budget_mb=100)
    assert get_all(pool, ["a", "b", "c", "a", "big"]) == ["b", "c"]  # a was used last of the three
    assert pool.loaded() == ["a", "big"]


def test_on_evict_is_optional_and_called_once_per_model():
    pool, _ = make_pool(dict.fromkeys("abc", 60.0), budget_mb=100)
    pool.get("a")  # no callback: eviction still works
    calls: list[str] = []
    pool.get("b", on_evict=calls.append)
    pool.get("b", on_evict=calls.append)  # already loaded: nothing evicted, no call
    assert calls == ["a"]
    pool.get("c")
    assert pool.loaded() == ["c"]


def test_model_is_never_evicted_for_itself():
    pool, loader = make_pool({"a": 90.0}, budget_mb=100)
    for _ in range(3):
        assert get_all(pool, ["a"]) == []
    assert loader.calls == ["a"]


def test_oversized_model_loads_alone(caplog):
    pool, loader = make_pool({"a": 20.0, "b": 20.0, "huge": 500.0, "c": 20.0}, budget_mb=100)
    get_all(pool, ["a", "b"])
    with caplog.at_level(logging.WARNING, logger="core.engines.pool"):
        assert get_all(pool, ["huge"]) == ["a", "b"]
    assert pool.loaded() == ["huge"]
    assert "huge" in caplog.text and "budget" in caplog.text  # noted, not refused
    assert pool.used_mb() == 500
    # The next model evicts the oversized one.
    assert get_all(pool, ["c"]) == ["huge"]
    assert pool.loaded() == ["c"]
    assert loader.calls == ["a", "b", "huge", "c"]


def test_low_estimate_is_corrected_after_loading():
    # The estimate said 10 MB; the model turned out to occupy 70: the pool trims with the real size.
    pool, _ = make_pool({"a": 50.0, "b": 70.0}, budget_mb=100, estimates={"a": 50.0, "b": 10.0})
    assert get_all(pool, ["a", "b"]) == ["a"]
    assert pool.loaded() == ["b"]


def test_failed_load_releases_its_reservation():
    sizes = {"a": 60.0, "c": 40.0}
    pool, loader = make_pool(sizes, budget_mb=100, estimates={**sizes, "broken": 30.0})

    def loader_with_failure(name, device, *, progress=None):
        if name == "broken":
            raise WeightsUnavailable("no file")
        return loader(name, device, progress=progress)

    pool._loader = loader_with_failure
    pool.get("a")
    with pytest.raises(WeightsUnavailable):
        pool.get("broken")  # 60 + 30 fits: nothing evicted
    assert get_all(pool, ["c"]) == []  # 60 + 40 fits only if broken's 30 was released
    assert pool.loaded() == ["a", "c"]


def test_unload_frees_budget():
    pool, _ = make_pool(dict.fromkeys("abc", 50.0), budget_mb=100)
    get_all(pool, ["a", "b"])
    pool.unload("a")
    assert get_all(pool, ["c"]) == []
    assert pool.loaded() == ["b", "c"]


# --- threads --------------------------------------------------------------------------------------


def test_concurrent_gets_of_one_name_load_once():
    pool, loader = make_pool({"a": 30.0, "b": 30.0}, budget_mb=100, delay=0.2)
    pool.get("b")
    barrier = threading.Barrier(8)
    evicted: list[str] = []

    def get(_):
        barrier.wait()
        return pool.get("a", on_evict=evicted.append)

    with ThreadPoolExecutor(8) as executor:
        models = list(executor.map(get, range(8)))
    assert loader.calls == ["b", "a"]
    assert all(m is models[0] for m in models)
    assert evicted == []
    assert pool.loaded() == ["b", "a"]


def test_concurrent_loads_of_different_names_stay_under_budget():
    # Both fit alone, not together: whichever arrives second must make room (or trim afterwards).
    pool, loader = make_pool({"x": 60.0, "y": 60.0}, budget_mb=100, delay=0.2)
    evicted: list[str] = []
    with ThreadPoolExecutor(2) as executor:
        list(executor.map(lambda name: pool.get(name, on_evict=evicted.append), ["x", "y"]))
    assert sorted(loader.calls) == ["x", "y"]
    assert len(pool.loaded()) == 1 and evicted == [n for n in "xy" if n not in pool.loaded()]
    assert pool.used_mb() <= pool.budget_mb


# --- LoadedModel.memory_mb ------------------------------------------------------------------------


def test_memory_mb_counts_parameters_and_buffers():
    module = torch.nn.Sequential(torch.nn.Linear(100, 50), torch.nn.BatchNorm1d(50))
    model = LoadedModel(spec=get_spec("resnet18"), module=module, preprocess=torch.nn.Identity(), device="cpu")
    # Linear 100*50 + 50, BatchNorm weight/bias/mean/var 4*50 float32, num_batches_tracked one int64.
    expected = ((100 * 50 + 50 + 4 * 50) * 4 + 8) / 2**20
    assert model.memory_mb == pytest.approx(expected)


def test_memory_mb_of_a_real_model_is_about_its_file(lite0):
    assert lite0.memory_mb == pytest.approx(lite0.spec.file_size_mb, rel=0.02)


def test_pool_measures_real_models(lite0):
    pool = ModelPool(loader=lambda key, device, progress=None: lite0, budget_mb=100)
    pool.get(ModelKey("efficientnet_lite0"))
    assert pool.used_mb() == pytest.approx(lite0.memory_mb)
