"""core.classify.compare: agreement maths on hand-made probabilities, then the three bundled models on real photos."""

from __future__ import annotations

import io
import json
import time
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from skimage import data as skdata

from core.classify import compare
from core.classify.compare import (
    Comparison,
    ImageComparison,
    ModelStats,
    compare_files,
    consensus,
    measure_latency_ms,
    shared_top_k,
    top1_agree,
)
from core.classify.predict import Classification, Failure, preprocess, probabilities
from core.engines.handle import ModelHandle
from core.errors import ZooScopeError
from core.images import decode_image
from core.models.keys import ModelKey
from core.models.loading import load_model

LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
CATS = {"tabby", "tiger cat", "Egyptian cat"}
CLASSES = ["cat", "dog", "fox", "owl"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def p(*values: float) -> torch.Tensor:
    return torch.tensor(values)


# --- maths --------------------------------------------------------------------------------------


def test_top1_agree():
    assert top1_agree(["cat", "cat", "cat"])
    assert not top1_agree(["cat", "dog", "cat"])
    assert top1_agree(["cat"])  # one model agrees with itself
    assert top1_agree([])


def test_shared_top_k():
    assert shared_top_k([{"cat", "dog", "fox"}, ["dog", "cat", "owl"], ("owl", "cat", "dog")]) == {"cat", "dog"}
    assert shared_top_k([["cat", "dog"], ["fox", "owl"]]) == set()
    assert shared_top_k([["cat", "dog"]]) == {"cat", "dog"}
    assert shared_top_k([]) == set()


def test_consensus_when_all_agree():
    probs = [p(0.1, 0.7, 0.1, 0.1), p(0.2, 0.6, 0.1, 0.1), p(0.0, 0.8, 0.2, 0.0)]
    label, probability = consensus(probs, CLASSES)
    assert label == "dog"
    assert probability == pytest.approx(0.7)


def test_consensus_when_models_disagree():
    probs = [p(0.6, 0.3, 0.1, 0.0), p(0.1, 0.2, 0.7, 0.0), p(0.2, 0.3, 0.0, 0.5)]
    assert [CLASSES[int(x.argmax())] for x in probs] == ["cat", "fox", "owl"]
    label, probability = consensus(probs, CLASSES)  # means: cat .3, dog .267, fox .267, owl .167
    assert label == "cat"
    assert probability == pytest.approx(0.3)


def test_consensus_is_mean_not_majority():
    # Two models narrowly say cat; one says dog with great confidence: the mean says dog.
    probs = [p(0.40, 0.35, 0.25, 0.0), p(0.40, 0.35, 0.25, 0.0), p(0.0, 0.9, 0.1, 0.0)]
    majority = max(CLASSES, key=[CLASSES[int(x.argmax())] for x in probs].count)
    assert majority == "cat"
    label, probability = consensus(probs, CLASSES)
    assert label == "dog"
    assert probability == pytest.approx(1.6 / 3)


def test_consensus_tie_goes_to_lowest_class_index_whatever_the_model_order():
    probs = [p(0.0, 0.75, 0.25, 0.0), p(0.0, 0.25, 0.75, 0.0)]  # dog and fox both average 0.5 exactly
    assert consensus(probs, CLASSES) == ("dog", 0.5)
    assert consensus(probs[::-1], CLASSES) == ("dog", 0.5)
    assert consensus([p(0.25, 0.25, 0.25, 0.25)], CLASSES) == ("cat", 0.25)


def test_consensus_of_one_model_is_its_top1():
    assert consensus([p(0.1, 0.2, 0.3, 0.4)], CLASSES) == ("owl", pytest.approx(0.4))


def test_consensus_refuses_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        consensus([], CLASSES)
    with pytest.raises(ValueError, match="equal length"):
        consensus([p(0.5, 0.5, 0.0, 0.0), p(0.5, 0.5, 0.0)], CLASSES)
    with pytest.raises(ValueError, match="equal length"):
        consensus([torch.ones(1, 4) / 4], CLASSES)
    with pytest.raises(ValueError, match="categories"):
        consensus([p(0.5, 0.5, 0.0, 0.0)], CLASSES[:3])


# --- latency ------------------------------------------------------------------------------------


class SleepyModule:
    """A 'forward' that sleeps for the next of the given durations (seconds)."""

    def __init__(self, durations: list[float]):
        self.durations = list(durations)
        self.calls = 0

    def __call__(self, x):
        time.sleep(self.durations[self.calls])
        self.calls += 1
        return x


def test_measure_latency_is_the_median_after_warm_up():
    module = SleepyModule([0.3, 0.010, 0.001, 0.060, 0.001, 0.060])  # warm-up, then 5 runs
    model = SimpleNamespace(forward=module, device=torch.device("cpu"))
    ms = measure_latency_ms(model, torch.zeros(1, 3, 8, 8), runs=5, warmup=1)
    assert module.calls == 6
    assert 10 <= ms < 60  # the median run, neither the slow warm-up nor the 60 ms outliers


def test_measure_latency_of_a_real_model(lite0):
    batch = torch.zeros(1, 3, 224, 224)
    ms = measure_latency_ms(lite0, batch, runs=2, warmup=1)
    assert ms > 0
    with pytest.raises(ValueError, match="runs"):
        measure_latency_ms(lite0, batch, runs=0)


# --- real models on real photos ---------------------------------------------------------------------


def jpeg(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def lite_models():
    return [ModelHandle.in_pytorch(load_model(name)) for name in LITE]


@pytest.fixture(scope="module")
def uploads() -> list[tuple[str, bytes]]:
    return [
        ("coffee.jpg", jpeg(skdata.coffee())),
        ("notes.txt", b"not an image"),
        ("chelsea.jpg", jpeg(skdata.chelsea())),
    ]


@pytest.fixture(scope="module")
def comparison(lite_models, uploads) -> tuple[Comparison, list[tuple]]:
    calls: list[tuple] = []
    result = compare_files(
        lite_models, uploads, k=5, latency_runs=2, thumbnails=True, progress=lambda *a: calls.append(a)
    )
    return result, calls


def test_coffee_all_say_espresso(comparison):
    result, _ = comparison
    coffee = result.images[0]
    assert coffee.file == "coffee.jpg"
    assert {name: c.top1.label for name, c in coffee.results.items()} == dict.fromkeys(LITE, "espresso")
    assert coffee.top1_agree
    assert coffee.consensus == "espresso"
    assert 0.5 < coffee.consensus_probability <= 1
    assert coffee.shared_top_k[0] == "espresso"


def test_chelsea_consensus_is_a_cat(comparison):
    result, _ = comparison
    chelsea = result.images[1]
    assert chelsea.file == "chelsea.jpg"
    assert chelsea.consensus in CATS
    assert all(c.top1.label in CATS for c in chelsea.results.values())


def test_bad_file_is_one_failure_and_order_is_kept(comparison):
    result, _ = comparison
    assert [f.file for f in result.failures] == ["notes.txt"]
    assert isinstance(result.failures[0], Failure) and result.failures[0].error
    assert [i.file for i in result.images] == ["coffee.jpg", "chelsea.jpg"]
    assert [e.file for e in result.entries] == ["coffee.jpg", "notes.txt", "chelsea.jpg"]


def test_results_are_classifications(comparison):
    result, _ = comparison
    assert result.models == list(LITE)
    for image in result.images:
        assert isinstance(image, ImageComparison)
        assert list(image.results) == list(LITE)
        for name, classification in image.results.items():
            assert isinstance(classification, Classification)
            assert classification.model == name and classification.file == image.file
            assert [p.rank for p in classification.predictions] == [1, 2, 3, 4, 5]
        assert image.thumbnail is not None and max(image.thumbnail.size) <= 512


def test_consensus_and_shared_match_the_predict_pipeline(comparison, lite_models, uploads):
    """Recompute each model's full probabilities through core.classify.predict: same consensus, same order."""
    result, _ = comparison
    for image in result.images:
        decoded = decode_image(dict(uploads)[image.file])
        probs = [probabilities(m, preprocess(m, [decoded]))[0] for m in lite_models]
        label, probability = consensus(probs, lite_models[0].categories)
        assert image.consensus == label
        assert image.consensus_probability == pytest.approx(probability, abs=1e-5)
        mean = torch.stack(probs).mean(0)
        index = {name: i for i, name in enumerate(lite_models[0].categories)}
        shared_means = [float(mean[index[name]]) for name in image.shared_top_k]
        assert shared_means == sorted(shared_means, reverse=True)
        labels = [{p.label for p in c.predictions} for c in image.results.values()]
        assert set(image.shared_top_k) == set.intersection(*labels)


def test_stats(comparison, lite_models):
    result, _ = comparison
    assert list(result.stats) == list(LITE)
    for model in lite_models:
        stats = result.stats[model.name]
        assert isinstance(stats, ModelStats)
        assert stats.latency_ms > 0
        assert stats.memory_mb == pytest.approx(model.memory_mb)
        assert stats.memory_mb == pytest.approx(stats.size_mb, rel=0.02)
        assert stats.family == "efficientnet_lite"
        assert (stats.acc1, stats.acc5, stats.gflops) == (model.spec.acc1, model.spec.acc5, model.spec.gflops)
        assert stats.params_m == pytest.approx(model.spec.num_params / 1e6)
    assert [result.stats[n].input_size for n in LITE] == [224, 240, 260]


def test_progress_once_per_model(comparison):
    _, calls = comparison
    assert [(done, total) for done, total, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    assert [message.split(":")[0] for _, _, message in calls] == list(LITE)


def test_models_frame(comparison):
    frame = comparison[0].models_frame()
    assert list(frame.columns) == [
        "model",
        "family",
        "runtime",
        "latency_ms",
        "agreement",
        "memory_mb",
        "acc1",
        "acc5",
        "params_m",
        "gflops",
        "size_mb",
        "input_size",
    ]
    assert list(frame["model"]) == list(LITE)
    assert (frame["latency_ms"] > 0).all()


def test_agreement_frame(comparison):
    frame = comparison[0].agreement_frame()
    assert list(frame.columns) == [
        "file",
        "top1_agree",
        "shared_top_k",
        "consensus",
        "consensus_probability",
        *LITE,
    ]
    assert list(frame["file"]) == ["coffee.jpg", "chelsea.jpg"]
    coffee = frame.iloc[0]
    assert bool(coffee["top1_agree"]) and coffee["consensus"] == "espresso"
    assert [coffee[name] for name in LITE] == ["espresso"] * 3
    assert frame["shared_top_k"].dtype.kind == "i" and (frame["shared_top_k"] >= 1).all()


def test_predictions_frame(comparison):
    frame = comparison[0].predictions_frame()
    assert list(frame.columns) == ["file", "model", "rank", "label", "probability"]
    assert len(frame) == 2 * 3 * 5
    top = frame[(frame["file"] == "coffee.jpg") & (frame["rank"] == 1)]
    assert list(top["model"]) == list(LITE) and set(top["label"]) == {"espresso"}


def test_as_json_schema(comparison):
    report = comparison[0].as_json()
    assert json.loads(json.dumps(report)) == report  # plain JSON types only
    assert set(report) == {"models", "images"}
    for entry, name in zip(report["models"], LITE, strict=True):
        assert set(entry) == {"name", "runtime", "latency_ms", "agreement", "acc1", "params", "gflops", "size_mb"}
        assert entry["runtime"] == "torch" and entry["agreement"] is None
        assert entry["name"] == name and isinstance(entry["params"], int) and entry["latency_ms"] > 0
    assert report["models"][0]["params"] == 4652008
    coffee, bad, chelsea = report["images"]
    assert set(coffee) == {"file", "results", "top1_agree", "consensus"}
    assert list(coffee["results"]) == list(LITE)
    assert all(set(row) == {"label", "probability"} for rows in coffee["results"].values() for row in rows)
    assert coffee["consensus"] == "espresso" and coffee["top1_agree"] is True
    assert bad == {"file": "notes.txt", "error": comparison[0].failures[0].error}
    assert chelsea["file"] == "chelsea.jpg" and chelsea["consensus"] in CATS


def test_latency_from_the_batch_when_no_runs(lite_models, uploads):
    result = compare_files(lite_models[:2], uploads[:1], k=3, latency_runs=0)
    assert all(s.latency_ms > 0 for s in result.stats.values())
    assert [len(c.predictions) for c in result.images[0].results.values()] == [3, 3]
    assert result.images[0].thumbnail is None


def test_all_files_bad(lite_models):
    result = compare_files(lite_models[:1], [("a.txt", b"text"), ("empty.png", b"")], latency_runs=1)
    assert result.images == [] and [f.file for f in result.failures] == ["a.txt", "empty.png"]
    assert result.stats["efficientnet_lite0"].latency_ms is None
    assert result.agreement_frame().empty and "efficientnet_lite0" in result.agreement_frame().columns
    assert result.predictions_frame().empty
    assert [i["file"] for i in result.as_json()["images"]] == ["a.txt", "empty.png"]


def test_one_model_agrees_with_itself(lite_models, uploads):
    image = compare_files(lite_models[:1], uploads[:1], latency_runs=0).images[0]
    assert image.top1_agree and image.consensus == "espresso"
    assert len(image.shared_top_k) == 5


def test_refuses_models_with_other_classes(lite_models):
    other = SimpleNamespace(name="digits", categories=[str(i) for i in range(10)])
    with pytest.raises(ZooScopeError, match="different sets of classes"):
        compare_files([lite_models[0], other], [])


def test_refuses_no_models_twice_the_same_and_bad_k(lite_models, uploads):
    with pytest.raises(ZooScopeError, match="at least one model"):
        compare_files([], uploads)
    with pytest.raises(ZooScopeError, match="efficientnet_lite0"):
        compare_files([lite_models[0], lite_models[0]], uploads)
    with pytest.raises(ValueError, match="k must be"):
        compare_files(lite_models[:1], uploads, k=0)


def test_serial_and_overlapped_preprocessing_agree(lite_models, uploads, monkeypatch):
    overlapped = compare_files(lite_models, uploads, latency_runs=0)
    monkeypatch.setattr(compare, "_overlap_preprocessing", lambda models: False)
    serial = compare_files(lite_models, uploads, latency_runs=0)
    for a, b in zip(overlapped.images, serial.images, strict=True):
        assert a.consensus == b.consensus and a.shared_top_k == b.shared_top_k
        assert a.consensus_probability == pytest.approx(b.consensus_probability, abs=1e-6)
        for name in LITE:
            assert [p.label for p in a.results[name].predictions] == [p.label for p in b.results[name].predictions]


def test_overlap_only_where_a_core_is_free(monkeypatch):
    cpu = [SimpleNamespace(device=torch.device("cpu"))]
    monkeypatch.setattr(compare.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(compare.torch, "get_num_threads", lambda: 2)
    assert not compare._overlap_preprocessing(cpu)  # torch's threads fill every core
    monkeypatch.setattr(compare.torch, "get_num_threads", lambda: 1)
    assert compare._overlap_preprocessing(cpu)
    monkeypatch.setattr(compare.torch, "get_num_threads", lambda: 2)
    assert compare._overlap_preprocessing([SimpleNamespace(device=torch.device("cuda"))])


def test_onnx_and_int8_side_by_side(uploads):
    from core.engines.choice import load_handle

    fp32 = load_handle(ModelKey("efficientnet_lite0"), runtime_choice="onnx")
    int8 = load_handle(ModelKey("efficientnet_lite0", "int8"))
    result = compare_files([fp32, int8], uploads, k=5, latency_runs=2)
    assert result.models == ["efficientnet_lite0", "efficientnet_lite0 · int8"]
    frame = result.models_frame().set_index("model")
    assert list(frame["runtime"]) == ["onnx", "int8"]
    assert frame.loc["efficientnet_lite0", "agreement"] == 1.0
    assert frame.loc["efficientnet_lite0 · int8", "agreement"] == pytest.approx(int8.agreement)
    for model in (fp32, int8):  # what each one holds and the file it runs from, not the PyTorch weights'
        assert frame.loc[model.name, "memory_mb"] == pytest.approx(model.memory_mb)
        assert frame.loc[model.name, "size_mb"] == pytest.approx(model.file_size_mb)
    assert frame.loc["efficientnet_lite0 · int8", "size_mb"] < frame.loc["efficientnet_lite0", "size_mb"] / 3
    assert (frame["latency_ms"] > 0).all()
