"""Whole-page behaviour: the language switch, the keyboard, small screens, the upcoming list."""
import re

import pytest
from playwright.sync_api import expect

from .conftest import assert_accessible, screenshot


def test_the_language_switch_shows_english_and_is_remembered(live, page):
    slug, _ = live.make_event()
    page.goto(f"/e/{slug}")
    expect(page.locator("html")).to_have_attribute("lang", "nl")
    expect(page.locator("dl.facts").first).to_contain_text("Wanneer")

    header = page.get_by_role("banner")
    english = header.get_by_role("link", name="English", exact=True)
    expect(english).to_be_visible()  # the switcher is in the header of every page
    expect(header.get_by_role("link", name="Nederlands", exact=True)).to_have_attribute("aria-current", "true")
    english.click()

    # Back on the same page, now in English: the page's language, its text and its dates.
    expect(page).to_have_url(re.compile(rf"/e/{slug}$"))
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("dl.facts").first).to_contain_text("When")
    expect(page.get_by_role("heading", name="Register", exact=True)).to_be_visible()
    when = page.locator("dl.facts dd").first.inner_text()
    assert re.search(r"(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday) \d+ \w+ \d{4}, \d\d:\d\d–\d\d:\d\d",
                     when), when
    expect(header.get_by_role("link", name="English", exact=True)).to_have_attribute("aria-current", "true")

    # Remembered: the next page (a plain link, no parameter) is English too, despite a Dutch browser.
    header.get_by_role("link", name=live.app.config["SITE_NAME"]).click()
    expect(page).to_have_url(f"{live.url}/")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Events")

    # And back.
    header.get_by_role("link", name="Nederlands", exact=True).click()
    expect(page.locator("html")).to_have_attribute("lang", "nl")
    expect(page.get_by_role("heading", level=1)).to_have_text("Bijeenkomsten")


def test_an_english_browser_gets_english_without_choosing(live, new_page):
    page = new_page(locale="en-GB")
    page.goto("/")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Events")


def test_tab_reaches_the_skip_link_first_and_it_moves_focus_to_main(live, page):
    slug, _ = live.make_event()
    page.goto(f"/e/{slug}")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Naar de inhoud")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()  # visible when focused, not just present
    page.keyboard.press("Enter")
    expect(page.locator("main#main")).to_be_focused()
    # The next Tab continues inside the content, not in the header.
    page.keyboard.press("Tab")
    assert page.evaluate("document.querySelector('main').contains(document.activeElement)")


def test_focus_is_visible_on_links_buttons_and_fields(live, page):
    """Every focusable control draws a visible focus indicator (an outline, not colour alone)."""
    slug, _ = live.make_event()
    page.goto(f"/e/{slug}")
    for selector in ["header a.brand", "main a[href^='mailto:']", "#name", "#consent", "main button[type=submit]"]:
        element = page.locator(selector).first
        element.focus()
        page.keyboard.press("Shift+Tab")  # focus by keyboard, so :focus-visible applies
        page.keyboard.press("Tab")
        expect(element).to_be_focused()
        outline = element.evaluate("e => getComputedStyle(e).outlineStyle + ' ' + getComputedStyle(e).outlineWidth")
        assert outline.split()[0] not in ("none", "") and outline.split()[1] != "0px", (selector, outline)


def test_the_upcoming_list(live, page):
    live.make_event(title="Samen onderwijs versnellen: terugkomdag")
    page.goto("/")
    expect(page).to_have_title(re.compile("^Bijeenkomsten"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Bijeenkomsten")
    expect(page.get_by_role("link", name="Samen onderwijs versnellen: terugkomdag")).to_be_visible()
    assert_accessible(page, "upcoming")
    screenshot(page, "upcoming")

    page.get_by_label("Voor wie").fill("gemeentelijke beleidsadviseurs")
    page.get_by_role("button", name="Filteren").click()
    expect(page).to_have_url(re.compile(r"voor=gemeentelijke"))
    expect(page.get_by_role("link", name="Samen onderwijs versnellen: terugkomdag")).to_be_visible()


@pytest.mark.parametrize("path", ["/", "/e/{slug}", "/inloggen"])
def test_pages_fit_a_phone_without_sideways_scrolling(live, new_page, path):
    slug, _ = live.make_event(summary="Een lange samenvatting met een heel lang woord: "
                                      "onderwijsachterstandenbeleidsafspraken.")
    page = new_page(width=390, height=844)
    page.goto(path.format(slug=slug))
    width = page.evaluate("document.documentElement.scrollWidth")
    too_wide = page.evaluate("""() => [...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
        .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : ''))""")
    assert width <= 390, f"{path} is {width}px wide on a 390px screen; too wide: {too_wide}"


def test_the_privacy_statement_is_linked_from_the_form_and_every_page(live, page):
    slug, _ = live.make_event()
    page.goto(f"/e/{slug}")
    # Next to the consent box, and tied to it for screen readers.
    expect(page.locator("#consent")).to_have_accessible_description(re.compile("Lees de privacyverklaring"))
    page.get_by_role("contentinfo").get_by_role("link", name="Privacyverklaring").click()
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert_accessible(page, "privacy")
