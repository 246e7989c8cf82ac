"""The web page in a real browser: headless Debian Chromium driven by Playwright (no browser download).

One user session against a tiny random model: fill a prompt, generate while watching the live preview,
use the result as input, paint a mask on it, inpaint, drop a PNG to restore its settings, open /docs.
Skipped where Chromium is missing, unless LATENTDIFF_REQUIRE_BROWSER is set (as .ci/run does).
"""

from __future__ import annotations

import base64
import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from latentdiff.serve.settings import ServeOptions
from tests.serving import running_server, save_tiny_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def decode_data_url(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2])))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        message = "Debian's chromium is not installed (apt-get install chromium; `make test` does it as root)"
        if os.environ.get("LATENTDIFF_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # As root (CI) Chromium's sandbox cannot start; containers often have a tiny /dev/shm.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def url(model):
    with running_server(ServeOptions(model)) as url:
        yield url


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(url)
    return page


@pytest.fixture()
def page(browser, url):
    page = open_page(browser, url)
    page.wait_for_selector("body[data-ready=true]")
    yield page
    page.close()


def test_generate_with_live_preview_then_paint_a_mask_and_inpaint(page, tmp_path):
    page.fill("#prompt", "a red circle")
    page.fill("#steps", "60")  # about 3 s on one core: long enough to see previews arrive
    page.fill("#seed", "7")
    page.click("#generate")
    page.wait_for_function("document.getElementById('preview').src.startsWith('data:image/png')")
    assert "txt2img: step" in page.inner_text("#progress-text")
    page.wait_for_selector("#gallery figure")
    made = page.inner_text("#gallery figure pre")
    assert made.startswith("a red circle\nSteps: 60, Sampler: Euler a, CFG scale: 7.5, Seed: 7, Size: 64x64,")
    assert page.inner_text("#progress-text") == "done"

    page.click("#gallery figure button:has-text('use as input')")
    page.check("input[value=inpaint]")
    page.fill("#steps", "4")
    page.wait_for_function("document.getElementById('mask-canvas').width === 64")
    box = page.locator("#mask-canvas").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 0.6 * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.9 * box["width"], y, steps=12)
    page.mouse.up()
    with page.expect_request("**/sdapi/v1/img2img") as sent:
        page.click("#generate")
    body = sent.value.post_data_json
    mask = np.asarray(decode_data_url(body["mask"]).convert("L"))
    assert mask.shape == (64, 64)
    assert mask[32, 40:56].min() == 255  # the stroke, in image pixels (the canvas is shown 4x)
    assert mask[:, :30].max() == 0 and mask[:20].max() == 0 and mask[44:].max() == 0  # nothing else
    assert (body["denoising_strength"], body["steps"]) == (0.75, 4)

    page.wait_for_function("document.querySelectorAll('#gallery figure').length === 2")
    repainted = page.inner_text("#gallery figure pre")  # the newest comes first
    assert repainted.startswith("a red circle\nSteps: 4, Sampler: Euler a, CFG scale: 7.5, Seed: 7, Size: 64x64,")
    assert "Denoising strength: 0.75, Mask: yes," in repainted
    image = decode_data_url(page.get_attribute("#gallery figure img", "src"))
    assert image.size == (64, 64) and image.text["parameters"] == repainted

    page.screenshot(path=tmp_path / "inpainted.png", full_page=True)
    assert Image.open(tmp_path / "inpainted.png").width == 1280
    assert page.errors == []


def test_dropping_a_png_restores_its_settings(page):
    page.fill("#prompt", "a blue square")
    page.fill("#negative_prompt", "blurry")
    page.fill("#steps", "2")
    page.fill("#seed", "123")
    page.select_option("#scheduler", "Karras")
    page.click("#generate")
    page.wait_for_selector("#gallery figure")
    page.fill("#prompt", "something else")
    page.fill("#seed", "-1")
    page.select_option("#scheduler", "Automatic")

    page.evaluate(
        """async (url) => {
            const blob = await (await fetch(url)).blob();
            const files = new DataTransfer();
            files.items.add(new File([blob], "made.png", {type: "image/png"}));
            document.dispatchEvent(new DragEvent("drop", {dataTransfer: files, bubbles: true, cancelable: true}));
        }""",
        page.get_attribute("#gallery figure img", "src"),
    )
    page.wait_for_function("document.getElementById('notice').textContent.includes('restored from made.png')")
    restored = {field: page.input_value(f"#{field}") for field in ("prompt", "negative_prompt", "seed", "scheduler")}
    assert restored == {"prompt": "a blue square", "negative_prompt": "blurry", "seed": "123", "scheduler": "Karras"}
    page.click("#seed-random")
    page.click("#seed-reuse")
    assert page.input_value("#seed") == "123"  # the last result's seed
    assert page.errors == []


def test_api_docs_render_without_network(page):
    page.goto(page.url + "docs")
    page.get_by_text("/sdapi/v1/txt2img", exact=True).wait_for()
    assert page.errors == []


def test_the_page_asks_for_the_api_key_and_then_works(browser, model):
    with running_server(ServeOptions(model, api_key="s3cret")) as url:
        page = open_page(browser, url)
        page.wait_for_selector("#key-label:not([hidden])")  # the first call got 401
        assert "missing or wrong API key" in page.inner_text("#error")
        page.fill("#api-key", "s3cret")
        page.press("#api-key", "Enter")
        page.wait_for_selector("body[data-ready=true]")
        assert page.inner_text("#error") == ""
        assert page.errors == []
        page.close()
