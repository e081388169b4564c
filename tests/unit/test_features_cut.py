"""Fast mode from a stage: the cut network, training on its features, bundles, ONNX and the CLI."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
import torch

from core.datasets.check_images import check_images
from core.datasets.labelled import Dataset
from core.errors import ZooScopeError
from core.features.cut import StageCut, cut_at, parameter_count, spec_stage_points
from core.features.stages import PENULTIMATE, stage_features, stage_points
from core.finetune.config import TrainConfig
from core.finetune.features_from import BEST, resolve, suggestion
from core.models.catalog import get_spec
from core.models.loading import LoadedModel
from core.preprocessing import model_batch
from tests.cli import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def resnet18() -> LoadedModel:
    spec = get_spec("resnet18")
    torch.manual_seed(0)
    return LoadedModel(spec, spec.build().eval().requires_grad_(False), spec.transforms(), torch.device("cpu"))


@pytest.mark.parametrize(("model", "stage"), [("lite0", "blocks.5"), ("resnet18", "layer2")])
def test_the_cut_network_gives_the_hooked_stage_features_with_fewer_parameters(request, model, stage):
    loaded = request.getfixturevalue(model)
    images = check_images()[:3]
    hooked = stage_features(loaded, [_png(image) for image in images]).features[stage]
    cut = cut_at(loaded, stage)
    with torch.inference_mode():
        found = cut(model_batch(images, loaded.preprocess))
    assert found.shape == hooked.shape and float((found - hooked).abs().max()) <= 1e-5
    # The modules after the stage are gone (the head's too): the cut holds fewer parameters than the backbone.
    assert parameter_count(cut) < parameter_count(cut_at(loaded, PENULTIMATE)) * 0.8
    assert [point.name for point in spec_stage_points(loaded.spec)] == [point.name for point in stage_points(loaded)]


def test_penultimate_is_no_cut_and_an_unknown_stage_lists_the_choices(lite0):
    assert not isinstance(cut_at(lite0, PENULTIMATE), StageCut)
    with pytest.raises(ZooScopeError, match=r"no stage 'blocks\.99'.*blocks\.5.*penultimate"):
        cut_at(lite0, "blocks.99")


def test_features_from_a_stage_is_fast_mode_only():
    assert TrainConfig(features_from="blocks.5").features_from == "blocks.5"
    assert TrainConfig(mode="finetune", features_from=PENULTIMATE).mode == "finetune"
    with pytest.raises(ZooScopeError, match="features_from .* fast mode only"):
        TrainConfig(mode="finetune", features_from="blocks.5")


def test_the_suggestion_needs_a_clear_margin_over_the_penultimate_layer():
    def result(best: float, last: float) -> dict:
        stages = [{"stage": "blocks.5", "accuracy": best}, {"stage": PENULTIMATE, "accuracy": last}]
        return {"backbones": {"efficientnet_lite0": {"stages": stages, "best": "blocks.5"}}}

    found = suggestion(result(0.91, 0.74), "efficientnet_lite0")
    assert found is not None and found.stage == "blocks.5" and "0.91 against 0.74" in found.text
    assert suggestion(result(0.77, 0.74), "efficientnet_lite0") is None  # within the folds' noise
    assert suggestion(result(0.91, 0.74), "resnet18") is None and suggestion(None, "efficientnet_lite0") is None


def test_fast_mode_from_a_stage_round_trips_through_a_bundle_and_onnx(lite0):
    from core.finetune.bundle import export_bundle, import_bundle
    from core.finetune.deploy import deploy_images, export_onnx_models
    from core.finetune.examples import example_dataset
    from core.finetune.extraction import FeatureCache, decode_item
    from core.finetune.train import train

    example = example_dataset()
    items = [item for label in example.classes for item in [i for i in example.items if i.label == label][:6]]
    dataset = Dataset(classes=list(example.classes), items=items)
    cache = FeatureCache()
    trained = train(lite0, dataset, TrainConfig(epochs=3, features_from="blocks.1"), cache=cache)
    assert trained.feature_dim == 24 and {key for key, _ in cache._entries} == {"efficientnet_lite0@blocks.1"}

    bundle = export_bundle(trained)
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(bundle)).read("manifest.json"))
    assert manifest["training"]["features_from"] == "blocks.1" and manifest["head"]["in_features"] == 24
    back = import_bundle(bundle, lambda key: lite0)
    images = [decode_item(item) for item in items[:4]]
    assert torch.equal(back.predict(images, lite0), trained.predict(images, lite0))

    (fp32,) = export_onnx_models(back, lite0, deploy_images(back, dataset), int8=False)
    assert fp32.agreement == 1.0 and fp32.max_difference < 1e-4
    # Smaller than the uncut backbone's weights alone could be.
    assert len(fp32.data) < parameter_count(cut_at(lite0, PENULTIMATE)) * 4 * 0.2


def test_a_bundle_whose_head_does_not_fit_its_stage_is_refused(lite0):
    from core.finetune.bundle import BundleError, export_bundle, import_bundle
    from core.finetune.trained import TrainedModel

    head = torch.nn.Linear(40, 2)  # blocks.2's width, but the bundle says blocks.5 (192)
    trained = TrainedModel(
        "efficientnet_lite0", lite0.spec.weights_id, ["a", "b"], TrainConfig(features_from="blocks.5"), head,
        threshold=0.5,
    )  # fmt: skip
    with pytest.raises(BundleError, match="takes 40 features; efficientnet_lite0's blocks.5 gives 192"):
        import_bundle(export_bundle(trained), lambda key: lite0)


@pytest.fixture(scope="module")
def glyphs_zip(tmp_path_factory) -> str:
    from tests.faces import zip_of
    from tests.glyphs import glyph_pngs

    path = tmp_path_factory.mktemp("glyphs") / "glyphs.zip"
    path.write_bytes(zip_of({label: images for label, images in glyph_pngs(5).items() if label in "01"}))
    return str(path)


def test_cli_fast_mode_from_a_stage_and_a_stage_it_lacks(capsys, tmp_path, glyphs_zip):
    bundle = tmp_path / "glyphs-model.zip"
    argv = ["finetune", glyphs_zip, "--features-from", "blocks.5", "--epochs", "2", "--runtime", "torch"]
    code, out, _ = run(capsys, *argv, "--out", str(bundle), "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["features_from"] == "blocks.5" and report["mode"] == "fast" and "probes" not in report
    assert json.loads(zipfile.ZipFile(bundle).read("manifest.json"))["training"]["features_from"] == "blocks.5"

    code, _, err = run(capsys, "finetune", glyphs_zip, "--features-from", "blocks.99", "--runtime", "torch")
    (error,) = [line for line in err.splitlines() if not line.startswith("warning:")]  # one line says why
    assert code == 2 and "no stage 'blocks.99'" in error and "blocks.5, blocks.6" in error
    code, _, err = run(capsys, "finetune", glyphs_zip, "--mode", "finetune", "--features-from", "blocks.5")
    assert code == 2 and "fast mode only" in err


def test_best_is_the_probes_pick_on_the_training_images(lite0, glyphs_zip):
    from core.datasets.labelled import dataset_from_zip

    dataset = dataset_from_zip(open(glyphs_zip, "rb").read())
    config, probes = resolve(lite0, dataset, TrainConfig(features_from=BEST))
    assert probes is not None and config.features_from == probes.best.stage
    assert probes.images == 8  # the 8 training images of 10: validation never picks the stage
    assert [score.stage for score in probes.stages][-1] == PENULTIMATE
