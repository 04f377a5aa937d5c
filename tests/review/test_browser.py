"""The review app in a real browser: open every page, click through to a run, filter the disagreements by
slice, sign off and find the decision row in the ledger; a refused sign-off shows its reason on the page."""

from __future__ import annotations

import pytest

from .browser import AVAILABLE, SKIP_REASON, browser_page
from .conftest import serving

pytestmark = pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)

PAGES = {
    "/": "Project",
    "/rounds": "Runs and rounds",
    "/runs/run-1": "Run run-1",
    "/disagreements": "Disagreements in run",
    "/signoff": "Sign-off",
    "/after-launch": "After launch",
}


def no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_every_page_opens_and_fits_1280_px(reviewed):
    _, spec = reviewed
    with serving(spec) as base, browser_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        for path, heading in PAGES.items():
            response = page.goto(base + path)
            assert response.ok, path
            assert heading in page.locator("h1").inner_text(), path
            assert no_sideways_scroll(page), f"{path} scrolls sideways at 1280 px"
        assert errors == []  # no script error, nothing the content policy blocked


def test_click_through_to_a_run_and_filter_disagreements_by_slice(reviewed):
    _, spec = reviewed
    with serving(spec) as base, browser_page() as page:
        page.goto(base + "/")
        page.click("nav >> text=Runs and rounds")
        page.click("a.run-link >> text=run-1")
        assert page.url == base + "/runs/run-1"
        assert page.locator("#slices tbody tr").count() == 2
        page.click("#to-disagreements")
        everything = page.locator("#disagreements tbody tr[data-tags]").count()
        assert everything > 0
        page.select_option("#slice", "tone=urgent")  # the page's script submits the filter on change
        page.wait_for_url("**slice=tone%3Durgent**")
        rows = page.locator("#disagreements tbody tr[data-tags]")
        assert 0 < rows.count() < everything
        assert all("tone=urgent" in rows.nth(i).get_attribute("data-tags") for i in range(rows.count()))
        widths = page.eval_on_selector_all(".dist .fill", "els => els.map(e => e.getBoundingClientRect().width)")
        assert widths and max(widths) > 0  # the probability bars are drawn


def test_sign_off_in_the_browser_records_the_decision_row(reviewed):
    project, spec = reviewed
    with serving(spec) as base, browser_page() as page:
        page.goto(base + "/signoff")
        assert page.is_checked("#decision-iterate")  # the rules' outcome is offered first
        page.fill("#name", "quinn")
        page.fill("#reason", "one more round on urgent tickets")
        page.click("#sign")
        page.wait_for_selector("#recorded")
        assert "one more round on urgent tickets" in page.locator("#decisions").inner_text()
    rows = project.ledger.verified_rows("decisions")
    assert [(r["run_id"], r["decision"], r["validator"]) for r in rows] == [("run-1", "iterate", "quinn")]


def test_a_refused_sign_off_shows_the_reason_on_the_page(reviewed):
    project, spec = reviewed
    with serving(spec) as base, browser_page() as page:
        page.goto(base + "/signoff")
        page.fill("#name", "dev")  # the driver
        page.click("#sign")
        refusal = page.wait_for_selector("#refusal")
        assert "dev is the driver and may not sign the decision on their own work" in refusal.inner_text()
        assert page.input_value("#name") == "dev"  # the form keeps what was typed
    assert project.ledger.rows("decisions") == []
