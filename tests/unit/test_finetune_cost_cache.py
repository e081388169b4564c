"""The fine-tune cost cache (core.finetune.cost_cache): one measurement per key, shared, kept on disk."""

from __future__ import annotations

import dataclasses
import json
import threading

from core.finetune.cost_cache import CostCache, CostKey, host_key
from core.finetune.depth import DEPTHS
from core.finetune.estimate import DepthCost

KEY = CostKey("efficientnet_lite0", 224, "linear", False, False, "Test CPU · 2 threads · torch 2.x")


def costs(step: float = 0.05) -> dict[str, DepthCost]:
    return {
        depth: DepthCost(depth, 1000 * i, decode=0.01, augment=0.002, features=0.02, step=step * i, forward=0.01)
        for i, depth in enumerate(DEPTHS)
    }


def test_costs_are_kept_per_key_and_read_back_by_another_process(tmp_path):
    path = tmp_path / "costs.json"
    cache = CostCache(path)
    assert cache.get(KEY, DEPTHS) is None
    cache.put(KEY, costs())
    assert cache.get(KEY, DEPTHS) == costs()
    assert cache.get(KEY, ("head", "last")) == {d: costs()[d] for d in ("head", "last")}
    # A restart: a new cache on the same file answers without measuring.
    assert CostCache(path).get(KEY, DEPTHS) == costs()
    entries = json.loads(path.read_text())["entries"]
    assert len(entries) == len(DEPTHS) and all(KEY.host in entry and "224 px" in entry for entry in entries)


def test_every_part_of_the_key_counts_the_host_too(tmp_path):
    cache = CostCache(tmp_path / "costs.json")
    cache.put(KEY, costs())
    for change in ({"host": "Another CPU · 2 threads · torch 2.x"}, {"train_size": 160}, {"head": "mlp"},
                   {"flip": True}, {"adapt_batchnorm": True}, {"backbone": "resnet18"}):  # fmt: skip
        assert cache.get(dataclasses.replace(KEY, **change), DEPTHS) is None, change
    assert cache.get(KEY, DEPTHS) is not None


def test_the_host_names_the_processor_threads_and_torch():
    import torch

    host = host_key()
    assert f"{torch.get_num_threads()} threads" in host and torch.__version__ in host


def test_a_missing_depth_means_not_measured_and_a_bad_file_is_ignored(tmp_path):
    path = tmp_path / "costs.json"
    cache = CostCache(path)
    cache.put(KEY, {"head": costs()["head"]})
    assert cache.get(KEY, DEPTHS) is None and cache.get(KEY, ("head",)) is not None
    path.write_text("{not json")
    assert CostCache(path).get(KEY, ("head",)) is None
    path.write_text(json.dumps({"format": 1, "entries": {KEY.entry("head"): {"depth": "head"}}}))
    assert CostCache(path).get(KEY, ("head",)) is None  # an older format: measured again
    unwritable = CostCache(tmp_path / "file" / "costs.json")
    (tmp_path / "file").write_text("a file where the folder should be")
    unwritable.put(KEY, costs())  # kept in memory, the failure logged, nothing raised
    assert unwritable.get(KEY, DEPTHS) == costs()


class FakeJob:
    def __init__(self):
        self.finished = False


def test_sessions_asking_for_the_same_key_share_one_job(tmp_path):
    cache = CostCache(tmp_path / "costs.json")
    started: list[FakeJob] = []
    barrier = threading.Barrier(8)
    got: list[FakeJob] = []

    def submit() -> FakeJob:
        started.append(FakeJob())
        return started[-1]

    def session() -> None:
        barrier.wait()
        got.append(cache.shared_job(KEY, submit, reusable=lambda job: not job.finished))

    threads = [threading.Thread(target=session) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(started) == 1 and all(job is started[0] for job in got)
    other = cache.shared_job(dataclasses.replace(KEY, train_size=160), submit, reusable=lambda job: True)
    assert other is not started[0] and len(started) == 2
    started[0].finished = True  # cancelled, say: the next one to ask starts it again
    assert cache.shared_job(KEY, submit, reusable=lambda job: not job.finished) is started[2]
