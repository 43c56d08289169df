"""The rest of the organiser's workspace, and cancelling an event, checked with axe-core."""
import re

from playwright.sync_api import expect

from .conftest import assert_accessible, log_in, screenshot


def test_the_workspace_pages_are_accessible(live, page):
    slug, event_id = live.make_event(title="Werksessie: samen aan tafel", mode="onsite",
                                     location="Kennisland, Utrecht", join_url="", capacity=2)
    live.register(slug, "fenna@example.org", name="Fenna de Boer")
    log_in(page, next_path="/beheer/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Bijeenkomsten")

    page.goto("/beheer/nieuw")
    page.get_by_role("button", name="Opslaan").click()
    expect(page.get_by_role("alert")).to_be_focused()
    expect(page).to_have_title(re.compile("^Fout: "))
    assert_accessible(page, "organiser-new-event-errors")

    page.goto(f"/beheer/{event_id}")
    expect(page.get_by_role("cell", name=re.compile("Fenna de Boer"))).to_be_visible()
    assert_accessible(page, "organiser-event-registrations")

    page.goto(f"/beheer/{event_id}/bericht")
    page.get_by_label("Onderwerp").fill("Routebeschrijving")
    page.get_by_label("Tekst").fill("Neem de ingang aan de achterkant.\n\nTot dan!")
    page.get_by_role("button", name="Voorbeeld bekijken").click()
    expect(page.get_by_role("heading", name="Voorbeeld")).to_be_visible()
    assert_accessible(page, "organiser-message-preview")

    page.goto(f"/beheer/{event_id}/berichten")
    assert_accessible(page, "organiser-delivery")

    page.goto("/beheer/koppelingen")
    assert_accessible(page, "organiser-integrations")


def test_a_cancelled_event_says_so_unmistakably(live, page):
    slug, event_id = live.make_event(title="Samen onderwijs versnellen: extra sessie")
    live.register(slug, "gijs@example.org", name="Gijs Smit")
    log_in(page, next_path=f"/beheer/{event_id}/annuleren")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Bijeenkomst annuleren")
    assert_accessible(page, "organiser-cancel-form")
    page.get_by_label(re.compile("^Reden")).fill("te weinig aanmeldingen")
    page.get_by_role("button", name="Annuleren en iedereen berichten").click()
    expect(page.get_by_role("status")).to_contain_text("De bijeenkomst is geannuleerd")

    page.goto(f"/e/{slug}")
    notice = page.locator(".notice-cancelled")
    expect(notice.get_by_role("heading", name="Geannuleerd")).to_be_visible()
    expect(notice).to_contain_text("te weinig aanmeldingen")
    expect(page.locator("dl.facts s")).to_be_visible()  # the date struck through, with the word next to it
    expect(page.locator("dl.facts .badge-cancelled")).to_have_text("Geannuleerd")
    expect(page.get_by_role("button", name="Aanmelden")).to_have_count(0)
    assert_accessible(page, "event-cancelled")
    screenshot(page, "event-cancelled")
    live.mails_to("gijs@example.org", subject_contains="Geannuleerd: ")


def test_the_not_found_page(live, page):
    response = page.goto("/e/bestaat-niet")
    assert response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Pagina niet gevonden")
    expect(page).to_have_title(re.compile("^Pagina niet gevonden"))
    assert_accessible(page, "not-found")
