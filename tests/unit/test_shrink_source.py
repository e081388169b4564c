"""What a shrink is judged on (core.shrink.source) and how its result reads (core.shrink.report)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.datasets.check_images import calibration_images, check_images
from core.shrink.report import as_json, table
from core.shrink.run import ShrinkResult
from core.shrink.source import ShrinkInputError, images_for_catalogue
from core.shrink.variants import Variant, fidelity


def test_catalogue_defaults_distil_on_calibration_variations_and_judge_on_other_ones():
    images = images_for_catalogue()
    assert len(images.train) == len(calibration_images()) and len(images.holdout) == len(check_images())
    assert images.train_labels is None and images.holdout_labels is None
    seen = {image.tobytes() for image in images.train}
    assert not any(image.tobytes() in seen for image in images.holdout)
    assert "24 variations" in images.description and "39 other" in images.description


def test_a_held_out_photo_that_is_also_a_calibration_photo_is_refused():
    photo = Image.new("RGB", (64, 48), (120, 30, 200))
    with pytest.raises(ShrinkInputError, match="1 of the held-out photos"):
        images_for_catalogue([photo, Image.new("RGB", (64, 48))], [photo.copy()])


def variant(name: str, kind: str, params: int, latency: float, agreement: float) -> Variant:
    return Variant(
        name=name, kind=kind, ratio=None, params=params, gflops=params / 1e7, onnx=Path(f"{name}.onnx"), module=None,
        size_mb=params * 4 / 2**20, compressed_mb=params * 3 / 2**20, fidelity=agreement, top1=(1, 2),
        latency_ms=latency, latency_one_thread_ms=2 * latency,
    )  # fmt: skip


def test_the_table_and_json_put_every_variant_against_the_unchanged_one():
    result = ShrinkResult(
        source="m", kind="catalogue", fidelity_kind="agreement", images="x", input_size=224, mean=(0.5,), std=(0.5,),
        variants=[
            variant("fp32", "original", 4_000_000, 10.0, 1.0), variant("pruned 50%", "pruned", 1_000_000, 4.0, 0.9)
        ],
    )  # fmt: skip
    frame = table(result)
    assert list(frame["variant"]) == ["fp32", "pruned 50%"]
    assert frame.loc[1, "× latency"] == pytest.approx(0.4) and frame.loc[1, "× params"] == pytest.approx(0.25)
    assert frame.loc[1, "Δ agreement"] == pytest.approx(-0.1)
    report = as_json(result)
    assert report["fidelity_kind"] == "agreement" and report["variants"][0]["variant"] == "fp32"
    assert set(report["variants"][1]) >= {
        "variant",
        "params",
        "gflops",
        "size_mb",
        "latency_ms",
        "fidelity",
        "files",
        "verified",
    }


def test_fidelity_is_the_share_of_expected_answers_and_refuses_a_mismatch():
    assert fidelity(np.array([1, 2, 3, 4]), [1, 2, 0, 4]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        fidelity(np.array([1, 2]), [1])


def test_a_model_that_will_not_export_is_a_one_line_error_not_a_traceback(monkeypatch, tmp_path):
    from core.engines.onnx_export import ExportFailed
    from core.errors import ZooScopeError
    from core.models.loading import load_model
    from core.shrink import run
    from core.shrink.source import catalogue_source

    def refuse(*args, **kwargs):
        raise ExportFailed("torch.onnx could not export it (an operator it does not know)")

    monkeypatch.setattr(run, "export_module", refuse)
    images = images_for_catalogue(calibration_images()[:2], check_images()[:2])
    with pytest.raises(ZooScopeError, match=r"efficientnet_lite0 \(fp32\) could not be exported to ONNX: .*operator"):
        run.shrink(catalogue_source(load_model("efficientnet_lite0")), images, tmp_path, run.ShrinkOptions())
