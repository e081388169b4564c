"""The "Weights" choice on the pages: beside a model with several published versions only, and the Models
page's table of versions with each one's accuracy and recipe link."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.app.conftest import TIMEOUT, ok
from ui.navigation import MODELS


def weights_selects(at: AppTest) -> dict[str, object]:
    return {box.key: box for box in at.selectbox if box.key and box.key.startswith("classify_weights_")}


def test_classify_offers_weights_only_for_a_model_with_several(app):
    assert weights_selects(app) == {}  # efficientnet_lite0 has one version
    ok(app.selectbox(key="classify_model").set_value("resnet50").run())
    (box,) = weights_selects(app).values()
    assert box.key == "classify_weights_resnet50" and box.value is None  # the default: DEFAULT
    assert [option.split(" · ")[0] for option in box.options] == ["IMAGENET1K_V2 (default)", "IMAGENET1K_V1"]
    assert "76.1% top-1" in box.options[1]


def test_models_page_lists_versions_with_recipe_links():
    at = ok(AppTest.from_file(str(Path(__file__).resolve().parents[2] / MODELS.file), default_timeout=TIMEOUT).run())
    (versions,) = [frame.value for frame in at.dataframe if "recipe" in frame.value.columns]
    resnet50 = versions[versions["name"] == "resnet50"].set_index("weights")
    assert resnet50.loc["IMAGENET1K_V1", "acc1"] < resnet50.loc["IMAGENET1K_V2", "acc1"]
    assert resnet50["recipe"].str.startswith("https://").all() and resnet50["default"].tolist() == [False, True]
    assert "efficientnet_lite0" not in set(versions["name"])
