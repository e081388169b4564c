"""Under load: 8 threads classify and compare through one shared ModelPool while a fine-tune trains.

tests/unit/test_finetune_train.py already checks 4 threads of `classify_images` on one directly
loaded model beside two trainings. This covers what a busy server does instead: every request
goes through the pool (`ModelPool.get`, starting empty, so the first requests race to load), two
models are in use at once, and `classify_files` and `compare_files` (with a bad file in the batch)
run side by side while `train` (fast mode, real backbone forwards) runs on the pool's Lite0.
Every answer must equal, bit for bit, the one the same models give in a single thread afterwards.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
import weakref
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from PIL import Image

from core.classify.compare import Comparison, compare_files
from core.classify.predict import classify_files, preprocess, probabilities
from core.datasets.labelled import dataset_from_uploads
from core.engines.handle import ModelHandle
from core.engines.pool import ModelPool
from core.finetune.config import TrainConfig
from core.finetune.train import train
from core.images import decode_image
from core.models.keys import ModelKey
from core.models.loading import load_model
from tests.faces import lfw_pngs
from tests.hostile import example

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = ("efficientnet_lite0", "efficientnet_lite1")
THREADS = 8
MIN_ROUNDS = 3  # each thread does at least one of each kind of request
MAX_ROUNDS = 12
FILES = [
    ("coffee.jpg", example("coffee.jpg")),
    ("chelsea.jpg", example("chelsea.jpg")),
    ("truncated.jpg", example("rocket.jpg")[:20_000]),
    ("rocket.jpg", example("rocket.jpg")),
]
PHOTOS = [decode_image(data) for name, data in FILES if name != "truncated.jpg"]


def parameter_hashes(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        digest.update(name.encode() + tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def comparable(comparison: Comparison) -> list:
    """Everything in a comparison but timings."""
    return [
        (
            image.file,
            {name: result.predictions for name, result in image.results.items()},
            image.top1_agree,
            image.shared_top_k,
            image.consensus,
            image.consensus_probability,
        )
        for image in comparison.images
    ] + [(failure.file, failure.error) for failure in comparison.failures]


def request(pool: ModelPool, kind: int):
    """One request as a page makes it: get the models from the pool, then classify or compare."""
    if kind < len(MODELS):
        model = pool.get(ModelKey(MODELS[kind]))
        results = classify_files(model, FILES, k=5)
        return ("classify", model.name), (
            [(r.file, getattr(r, "predictions", None), getattr(r, "error", None)) for r in results],  # no timings
            probabilities(model, preprocess(model, PHOTOS)),
        )
    models = [pool.get(ModelKey(name)) for name in MODELS]
    return ("compare",), comparable(compare_files(models, FILES, k=5, latency_runs=0))


@pytest.fixture(scope="module")
def faces():
    face, other = lfw_pngs()
    uploads = {
        "face": [(f"face_{i}.png", data) for i, data in enumerate(face[:10])],
        "not_face": [(f"other_{i}.png", data) for i, data in enumerate(other[:10])],
    }
    return dataset_from_uploads(uploads)


@pytest.fixture(scope="module")
def under_load(faces):
    loads = Counter()

    def counting_loader(key, device, **kwargs):
        loads[key.name] += 1
        return ModelHandle.in_pytorch(load_model(key.name, device, **kwargs))

    pool = ModelPool("cpu", loader=counting_loader, budget_mb=1000)
    start = threading.Barrier(THREADS + 1)
    training_done = threading.Event()

    def trainer():
        start.wait()
        began = time.perf_counter()
        backbone = pool.get(ModelKey(MODELS[0])).torch
        trained = train(backbone, faces, TrainConfig(mode="fast", epochs=4))  # no cache: real forwards
        return trained, (began, time.perf_counter())

    def client(first_kind: int) -> list:
        start.wait()  # all at once, into an empty pool
        answers = []
        while len(answers) < MIN_ROUNDS or (not training_done.is_set() and len(answers) < MAX_ROUNDS):
            began = time.perf_counter()
            key, answer = request(pool, (first_kind + len(answers)) % (len(MODELS) + 1))
            answers.append((key, answer, (began, time.perf_counter())))
        return answers

    with ThreadPoolExecutor(max_workers=THREADS + 1) as executor:
        training = executor.submit(trainer)
        clients = [executor.submit(client, i) for i in range(THREADS)]
        trained, training_span = training.result()
        training_done.set()
        answers = [answer for future in clients for answer in future.result()]

    models = {name: pool.get(ModelKey(name)).torch for name in MODELS}
    # What the shared models must still hold: the same weights loaded afresh from their files.
    pristine = {name: parameter_hashes(load_model(name).module) for name in MODELS}
    # The single-threaded answers, from the same shared models, after the storm.
    reference = dict(request(pool, kind) for kind in range(len(MODELS) + 1))
    return {
        "answers": answers,
        "reference": reference,
        "loads": loads,
        "trained": trained,
        "training_span": training_span,
        "models": models,
        "pristine": pristine,
    }


def test_every_answer_under_load_equals_the_single_threaded_one(under_load):
    answers, reference = under_load["answers"], under_load["reference"]
    assert len(answers) >= THREADS * MIN_ROUNDS
    kinds = Counter(key for key, _, _ in answers)
    assert set(kinds) == set(reference) and min(kinds.values()) >= THREADS
    for key, answer, _ in answers:
        if key[0] == "classify":
            results, probs = answer
            expected_results, expected_probs = reference[key]
            assert results == expected_results, key  # every probability compared as an exact float
            assert torch.equal(probs, expected_probs), key
        else:
            assert answer == reference[key]


def test_the_answers_are_the_right_ones(under_load):
    results, _ = under_load["reference"][("classify", "efficientnet_lite0")]
    by_file = {file: (predictions, error) for file, predictions, error in results}
    assert by_file["coffee.jpg"][0][0].label == "espresso"
    assert "truncated" in by_file["truncated.jpg"][1]
    compared = under_load["reference"][("compare",)]
    assert compared[0][0] == "coffee.jpg" and compared[0][4] == "espresso"


def test_the_requests_really_ran_while_training(under_load):
    began, ended = under_load["training_span"]
    overlapping = [key for key, _, (start, end) in under_load["answers"] if start < ended and end > began]
    assert len(overlapping) >= THREADS
    assert {key[0] for key in overlapping} == {"classify", "compare"}


def test_racing_first_requests_loaded_each_model_once(under_load):
    assert under_load["loads"] == Counter(dict.fromkeys(MODELS, 1))


def test_training_beside_them_worked_and_left_the_shared_models_alone(under_load):
    trained = under_load["trained"]
    assert trained.classes == ["face", "not_face"] and trained.epochs_run >= 1
    for name, model in under_load["models"].items():
        assert parameter_hashes(model.module) == under_load["pristine"][name], f"{name} was changed"
        assert not model.module.training
        assert not any(p.requires_grad for p in model.module.parameters())
        assert model.module.classifier.out_features == 1000
    assert trained.predict(PHOTOS[:1], under_load["models"][MODELS[0]]).shape == (1, 2)


# --- memory: a big batch keeps one batch of decoded images alive, not the whole upload -------------


def test_a_big_batch_keeps_at_most_one_batch_of_decoded_images_alive(monkeypatch, lite0):
    """What lets 200 photos fit (bench/bench_batch_memory.py measures it): every decoded image is freed
    once its batch is classified, before the next batch is decoded; only thumbnails stay."""
    from core.classify import predict

    live: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # images are unhashable: keyed by id
    most = 0
    decode = predict.decode_image

    def tracked(data: bytes, **kwargs):
        nonlocal most
        image = decode(data, **kwargs)
        live[id(image)] = image
        most = max(most, len(live))
        return image

    monkeypatch.setattr(predict, "decode_image", tracked)
    photo = Image.new("RGB", (96, 64), (120, 80, 40))
    files = [(f"p{i}.png", encode_png(photo)) for i in range(40)]
    results = predict.classify_files(lite0, files, batch_size=8, thumbnails=True)
    assert len(results) == 40 and all(r.thumbnail is not None for r in results)
    assert most == 8, f"{most} decoded images alive at once with batches of 8"
    del results
    assert len(live) == 0


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
