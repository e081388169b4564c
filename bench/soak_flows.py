"""What one visitor does in the soak: a heavy flow through one page, in a browser session of its own.

Each flow opens its page by its address in a fresh browser context (no cookies, no earlier session),
does what the issue's class of visitors did, and waits for the answer the page gives when it is done:

- finetune: the example dataset, fine-tune mode, the whole network trained, until the confusion matrix;
- features: the example photos and a zip of two texture classes, three backbones, until the k-NN score;
- compare: two photos on the three offline models, then Grad-CAM, until every heat map is drawn;
- inside: efficientnet_lite0's anatomy and the stage maps of the example photo;
- classify: a bad file beside a real photo: the bad one reported, the photo classified.

A flow fails on a timeout, on an exception drawn in the page, or on "Traceback" anywhere in it. Waiting
in line for the server is part of a flow's time, as a visitor lives it.
"""

from __future__ import annotations

import io
import re
import time
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
TEXTURES = ROOT / "assets" / "datasets" / "textures"
VIEWPORT = {"width": 1400, "height": 1000}
OFFLINE_TRIO = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@dataclass
class FlowResult:
    flow: str
    session: int
    seconds: float
    error: str | None = None
    server_ms: float | None = None  # Classify: the latency the page reports (preprocess, forward, top-k)

    @property
    def ok(self) -> bool:
        return self.error is None


def _keyed(page, key: str):
    return page.locator(f".st-key-{key}")


async def _settle(page) -> None:
    await page.wait_for_function(
        "() => !document.querySelector(\"[data-testid='stStatusWidget']\")"
        " && !document.querySelector(\"[data-stale='true']\")"
    )


def _photo_input(page):
    uploader = page.locator("[data-testid='stFileUploader']").filter(has_text="Upload photos")
    return uploader.locator("[data-testid='stFileUploaderDropzoneInput']")


def _textures_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("brick", "grass"):
            for path in sorted((TEXTURES / name).glob("*.png"))[:4]:
                archive.writestr(f"textures/{name}/{path.name}", path.read_bytes())
    return buffer.getvalue()


async def finetune(page, url: str, *, epochs: int | None = None) -> None:
    """`epochs`: at most this many (the short soak's); None keeps fine-tune mode's default."""
    await page.goto(f"{url}/finetune")
    await page.get_by_role("button", name="Try an example dataset").click()
    await page.get_by_text("75 images in 3 classes").wait_for()
    await _settle(page)
    await _keyed(page, "finetune_mode").get_by_text("Fine-tune:").click()
    await _settle(page)
    await _keyed(page, "finetune_unfreeze").get_by_text("Whole network").click()
    await _settle(page)
    if epochs is not None:
        await _set_epochs(page, epochs)
    await _keyed(page, "finetune_train").locator("button").click()
    await page.get_by_text("Confusion matrix").wait_for()


async def _set_epochs(page, epochs: int) -> None:
    field = _keyed(page, "finetune_epochs").locator("input")
    if not await field.is_visible():
        await page.get_by_text("Training settings").click()
    for _ in range(3):  # a rerun still drawing the page can replace the field and drop what was typed
        await field.fill(str(epochs))
        await field.press("Enter")
        await _settle(page)
        if await field.input_value() == str(epochs):
            return
    raise AssertionError(f"the epochs stayed at {await field.input_value()}, not {epochs}")


async def features(page, url: str) -> None:
    await page.goto(f"{url}/features")
    await page.get_by_role("heading", name="Features").first.wait_for()
    await _settle(page)
    backbones = page.locator("[data-testid='stMultiSelect']").first
    for name in OFFLINE_TRIO[1:]:
        await backbones.click()
        await page.keyboard.type(name)
        await page.get_by_role("option", name=name, exact=True).click()
        await _settle(page)
    await page.keyboard.press("Escape")
    await _keyed(page, "features_examples_on").locator("button").click()
    await _settle(page)
    await page.get_by_role("tab", name="Zip of class folders").click()
    await (
        _keyed(page, "features_zip")
        .locator("input[type='file']")
        .set_input_files([{"name": "textures.zip", "mimeType": "application/zip", "buffer": _textures_zip()}])
    )
    await page.get_by_text(re.compile(r"separates your classes best")).wait_for()


async def compare(page, url: str) -> None:
    await page.goto(f"{url}/compare")
    await page.get_by_role("heading", name="Compare").first.wait_for()
    await _photo_input(page).set_input_files([str(EXAMPLES / "coffee.jpg"), str(EXAMPLES / "chelsea.jpg")])
    await page.get_by_role("heading", name="Agreement").wait_for()
    await _settle(page)
    await page.get_by_text("Explain: show where each model looks (Grad-CAM)").click()
    await page.get_by_role("heading", name="Where each model looks").wait_for()
    for name in OFFLINE_TRIO:
        await page.get_by_text(re.compile(rf"^{name}: espresso \(\d")).wait_for()


async def inside(page, url: str) -> None:
    await page.goto(f"{url}/inside?model=efficientnet_lite0")
    await page.get_by_role("tab", name="Stages", exact=True).wait_for()
    await _settle(page)
    await page.get_by_role("tab", name="What each stage sees", exact=True).click()  # the photo's tab
    await _settle(page)
    await page.get_by_role("button", name="Try an example").click()
    await page.get_by_text(re.compile(r"efficientnet_lite0 sees .+ \(\d+\.\d%\)")).wait_for()
    await page.locator("[data-testid='stMarkdown']").get_by_text("9. bn2", exact=True).wait_for()


async def classify(page, url: str) -> float:
    """A bad file beside a photo; returns the photo's latency as the page reports it (the server's own work)."""
    await page.goto(url)
    await page.get_by_role("heading", name="Classify").first.wait_for()
    await _settle(page)
    bad = {"name": "holiday.jpg", "mimeType": "image/jpeg", "buffer": b"<html>not a photo</html>"}
    photo = {"name": "chelsea.jpg", "mimeType": "image/jpeg", "buffer": (EXAMPLES / "chelsea.jpg").read_bytes()}
    await _photo_input(page).set_input_files([bad, photo])
    await page.get_by_text("holiday.jpg: The file looks like a text/HTML file").wait_for()
    await page.get_by_text("1 of 2 images classified").wait_for()
    caption = await page.get_by_text(re.compile(r"[\d.]+ ms per photo with preprocessing")).first.inner_text()
    return float(caption.split(" ms per photo")[0])


FLOWS: dict[str, Callable[..., Awaitable[float | None]]] = {
    "finetune": finetune,
    "features": features,
    "compare": compare,
    "inside": inside,
    "classify": classify,
}


async def run_flow(
    browser, url: str, flow: str, session: int, *, timeout_s: float, delay_s: float = 0.0, options: dict | None = None
) -> FlowResult:
    """One visitor's flow in a browser context of its own; its time from opening the page to the answer."""
    import asyncio

    await asyncio.sleep(delay_s)
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    page.set_default_timeout(timeout_s * 1000)
    started = time.monotonic()
    error, server_ms = None, None
    try:
        server_ms = await FLOWS[flow](page, url, **(options or {}))
        await _settle(page)
        if await page.locator("[data-testid='stException']").count():
            error = (
                "an exception is drawn in the page: "
                + (await page.locator("[data-testid='stException']").first.inner_text())[:300]
            )
        elif await page.get_by_text("Traceback").count():
            error = "a traceback is shown in the page"
    except Exception as failure:  # noqa: BLE001 - a timeout or a browser error is this flow's finding
        error = f"{type(failure).__name__}: {str(failure).splitlines()[0][:300]}"
    seconds = time.monotonic() - started
    await context.close()
    return FlowResult(flow, session, seconds, error, server_ms)
