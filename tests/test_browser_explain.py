"""The page's Explain button in a real browser: headless Debian Chromium driven by Playwright, as test_browser.py.

Skipped where Chromium is missing, unless LATENTDIFF_REQUIRE_BROWSER is set (as .ci/run does).
"""

from __future__ import annotations

import pytest

from latentdiff.serve.settings import ServeOptions
from tests.serving import running_server, save_tiny_model
from tests.test_browser import browser, open_page  # noqa: F401 (browser: the shared fixture)


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with running_server(ServeOptions(save_tiny_model(tmp_path_factory.mktemp("models") / "tiny"))) as url:
        yield url


def test_explain_opens_the_report_in_a_new_tab_or_links_it_when_popups_are_blocked(browser, url):  # noqa: F811 (the imported fixture)
    page = open_page(browser, url)
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#prompt", "a red circle")
    page.fill("#steps", "2")
    page.fill("#seed", "5")
    with page.context.expect_page() as opened, page.expect_request("**/latentdiff/v1/explain") as sent:
        page.click("#explain")
    assert sent.value.post_data_json == {
        "prompt": "a red circle", "negative_prompt": "", "seed": 5, "steps": 2, "cfg_scale": 7.5,
        "sampler_name": "Euler a", "scheduler": "Automatic"}  # fmt: skip
    report = opened.value
    report.wait_for_url("blob:**")
    report.wait_for_selector("h1")
    assert report.inner_text("h1") == "a red circle"
    assert report.locator("img[src^='data:image/gif;base64,']").count() == 1
    assert report.locator("img[src^='data:image/png;base64,']").count() >= 5
    assert page.get_attribute("#report-link", "href").startswith("blob:")
    assert page.inner_text("#error") == ""

    page.evaluate("window.open = () => null")  # as when a popup blocker refuses the tab
    page.fill("#prompt", "a blue square")
    page.click("#explain")
    page.wait_for_function("document.getElementById('notice').textContent === 'explained: open the report'")
    with page.context.expect_page() as linked:
        page.click("#report-link")
    linked.value.wait_for_selector("h1")
    assert linked.value.inner_text("h1") == "a blue square"

    page.fill("#steps", "0")  # the server's answer lands in the error area
    page.click("#explain")
    page.wait_for_function("document.getElementById('error').textContent !== ''")
    assert page.inner_text("#error") == "steps: Input should be greater than or equal to 1"
    assert page.errors == []
    page.close()
