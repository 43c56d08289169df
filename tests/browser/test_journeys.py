"""The registrant's and the organiser's journeys, in Chromium, in Dutch and in English.

Each journey checks what a person sees, runs axe-core on the pages it passes
(no serious or critical violations) and saves screenshots of the key pages.
"""
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from .conftest import assert_accessible, log_in, screenshot

AMSTERDAM = ZoneInfo("Europe/Amsterdam")

# What a visitor reads, per language (the English side is the en catalogue's wording).
TEXT = {
    "nl": dict(
        switch="Nederlands", register_heading="Aanmelden", register="Aanmelden", waitlist_button="Aanmelden voor de wachtlijst",
        name="Naam", email="E-mailadres", organisation="Organisatie", consent="Ik ga akkoord met de privacyverklaring",
        when="Wanneer", where="Waar", online="Online", audience="Voor wie?", contact="Contactpersoon",
        full="Vol; u kunt zich aanmelden voor de wachtlijst",
        problem="Er is een probleem", error_title="Fout:", name_error="Vul uw naam in.",
        email_error="Vul uw e-mailadres in.",
        consent_error="Geef aan dat u akkoord gaat met de privacyverklaring.",
        thanks="Bedankt voor uw aanmelding", waitlisted="U staat op de wachtlijst",
        confirmation_subject="Bevestiging: ", waitlist_subject="Wachtlijst: ",
        rescheduled_subject="Gewijzigd: ", cancelled_subject="Afmelding bevestigd: ",
        personal_link_label="Uw aanmelding bekijken, in uw agenda zetten of annuleren",
        your_registration="Uw aanmelding", registered="Aangemeld", cancel="Aanmelding annuleren",
        cancel_question="Weet u zeker", cancel_yes="Ja, annuleer mijn aanmelding",
        cancelled_flash="Uw aanmelding is geannuleerd", cancelled="Geannuleerd",
        login="Inloggen voor organisatoren", events="Bijeenkomsten", reschedule="Verplaatsen",
        date="Datum", start="Begintijd", end="Eindtijd", reason="Reden",
        reschedule_submit="Verplaatsen en iedereen berichten", moved="Verplaatst",
        moved_flash="De bijeenkomst is verplaatst",
    ),
    "en": dict(
        switch="English", register_heading="Register", register="Register", waitlist_button=None,
        name="Name", email="Email address", organisation=None, consent="I agree to the privacy statement",
        when="When", where=None, online="Online", audience="Who is it for?", contact=None,
        full=None,
        problem="There is a problem", error_title="Error:", name_error="Enter your name.",
        email_error="Enter your email address.",
        consent_error="Please confirm that you agree to the privacy statement.",
        thanks="Thank you for registering", waitlisted="You are on the waiting list",
        confirmation_subject="Confirmed: ", waitlist_subject=None,
        rescheduled_subject="Updated: ", cancelled_subject=None,
        personal_link_label=None,
        your_registration="Your registration", registered=None, cancel="Cancel registration",
        cancel_question=None, cancel_yes=None, cancelled_flash=None, cancelled=None,
        login="Organiser login", events="Events", reschedule="Reschedule",
        date="Date", start="Start time", end="End time", reason="Reason",
        reschedule_submit="Reschedule and notify everyone", moved="Rescheduled",
        moved_flash=None,
    ),
}


def choose_language(page, lang):
    """Use the switcher in the header (the page must show it) to pick `lang`."""
    if lang == "nl":
        expect(page.locator("html")).to_have_attribute("lang", "nl")
        return
    switcher = page.get_by_role("banner").get_by_role("link", name=TEXT[lang]["switch"], exact=True)
    expect(switcher).to_be_visible()
    switcher.click()
    expect(page.locator("html")).to_have_attribute("lang", lang)


def fill_registration(page, t, name, email, organisation="Stichting Primair Onderwijs Utrecht"):
    page.get_by_label(t["name"], exact=True).fill(name)
    page.get_by_label(re.compile("^" + re.escape(t["email"]))).fill(email)
    page.locator("#organisation").fill(organisation)
    page.locator("#role").fill("Bestuurder")
    page.get_by_label(re.compile("^" + re.escape(t["consent"]))).check()


@pytest.mark.parametrize("lang", ["nl", "en"])
def test_register_for_the_online_session_and_see_the_confirmation(live, page, lang):
    t = TEXT[lang]
    # Dutch: the demo's own online session (eventsvc/demo.py); English: one just like it.
    slug = "samen-onderwijs-versnellen" if lang == "nl" else live.make_event()[0]
    email = f"anne.{lang}@example.org"
    page.goto(f"/e/{slug}")
    choose_language(page, lang)

    expect(page.get_by_role("heading", level=1)).to_have_text("Samen onderwijs versnellen")
    facts = page.locator("dl.facts").first
    expect(facts).to_contain_text(t["when"])
    expect(facts).to_contain_text(t["online"])
    expect(facts).to_contain_text(t["audience"])
    expect(facts).to_contain_text("mieke.vandenberg@example.org")
    expect(page.get_by_role("heading", name=t["register_heading"], exact=True)).to_be_visible()
    assert_accessible(page, "event")
    screenshot(page, "event")

    fill_registration(page, t, "Anne de Vries", email)
    page.get_by_role("button", name=t["register"], exact=True).click()

    expect(page).to_have_url(re.compile(rf"/e/{slug}/aangemeld$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(t["thanks"])
    expect(page.get_by_role("main")).to_contain_text(email)
    expect(page).to_have_title(re.compile("Samen onderwijs versnellen"))
    assert_accessible(page, "confirmation")
    screenshot(page, "confirmation")

    [mail] = live.mails_to(email, subject_contains=t["confirmation_subject"])
    assert mail["Subject"] == t["confirmation_subject"] + "Samen onderwijs versnellen"


def test_register_for_a_full_session_puts_you_on_the_waiting_list(live, page):
    t = TEXT["nl"]
    slug, _ = live.make_event(title="Werksessie: samen aan tafel", mode="onsite", location="Kennisland, Utrecht",
                              join_url="", capacity=1)
    assert live.register(slug, "eerste@example.org") == "confirmed"  # the one seat is taken
    email = "bram.wachtlijst@example.org"

    page.goto(f"/e/{slug}")
    expect(page.locator("dl.facts").first).to_contain_text(t["full"])
    expect(page.get_by_text("Deze bijeenkomst is vol.")).to_be_visible()
    fill_registration(page, t, "Bram Jansen", email)
    page.get_by_role("button", name=t["waitlist_button"], exact=True).click()

    expect(page.get_by_role("heading", level=1)).to_have_text(t["waitlisted"])
    expect(page.get_by_role("main")).to_contain_text("Werksessie: samen aan tafel is vol.")
    assert_accessible(page, "waitlisted")
    screenshot(page, "waitlisted")
    [mail] = live.mails_to(email)
    assert mail["Subject"] == t["waitlist_subject"] + "Werksessie: samen aan tafel"


@pytest.mark.parametrize("lang", ["nl", "en"])
def test_an_empty_form_shows_an_error_summary_whose_links_focus_the_fields(live, page, lang):
    t = TEXT[lang]
    slug, _ = live.make_event()
    page.goto(f"/e/{slug}")
    choose_language(page, lang)
    page.get_by_role("button", name=t["register"], exact=True).click()

    summary = page.get_by_role("alert").filter(has_text=t["problem"])
    expect(summary).to_be_visible()
    expect(page).to_have_title(re.compile("^" + re.escape(t["error_title"])))
    # The summary takes focus on load, so keyboard and screen reader users start there.
    expect(summary).to_be_focused()
    links = summary.get_by_role("link")
    expect(links).to_have_text([t["name_error"], t["email_error"], t["consent_error"]])
    # Each field says what is wrong, tied to the field for screen readers.
    expect(page.locator("#name")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#name")).to_have_accessible_description(re.compile(re.escape(t["name_error"])))
    expect(page.locator("#consent")).to_have_accessible_description(re.compile(re.escape(t["consent_error"])))
    assert_accessible(page, "form-errors")
    screenshot(page, "form-errors")

    # Pressing a link in the summary moves focus to its field (keyboard: Enter on the focused link).
    for text, field_id in [(t["email_error"], "email"), (t["consent_error"], "consent"), (t["name_error"], "name")]:
        link = summary.get_by_role("link", name=text)
        link.focus()
        page.keyboard.press("Enter")
        expect(page.locator(f"#{field_id}")).to_be_focused()
        expect(page.locator(f"#{field_id}")).to_be_in_viewport()

    # Correcting the form clears the errors and registers.
    fill_registration(page, t, "Chris Bakker", f"chris.{lang}@example.org")
    page.get_by_role("button", name=t["register"], exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(t["thanks"])


def test_personal_page_from_the_confirmation_mail_and_cancel(live, page):
    t = TEXT["nl"]
    slug, _ = live.make_event(capacity=20)
    email = "dewi.persoonlijk@example.org"
    page.goto(f"/e/{slug}")
    fill_registration(page, t, "Dewi Pranoto", email)
    page.get_by_role("button", name=t["register"], exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(t["thanks"])

    [mail] = live.mails_to(email, subject_contains=t["confirmation_subject"])
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    personal = re.search(rf"{re.escape(live.url)}/r/[A-Za-z0-9_-]+(?=\s)", text)
    assert personal, f"no personal link in the mail:\n{text}"
    link = personal.group(0)
    assert f'href="{link}"' in html, "the HTML part links to the same personal page"
    assert t["personal_link_label"] in text

    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text(t["your_registration"])
    main = page.get_by_role("main")
    expect(main).to_contain_text("Samen onderwijs versnellen")
    expect(main).to_contain_text(t["registered"])
    expect(main).to_contain_text(email)
    assert_accessible(page, "personal")
    screenshot(page, "personal")

    # The join link says when it opens (the session is weeks away).
    page.get_by_role("link", name="Deelnemen", exact=True).click()
    expect(page).to_have_url(f"{link}/join")
    expect(page.locator(".notice")).to_contain_text("Uw persoonlijke link werkt vanaf")
    assert_accessible(page, "join-not-yet")
    page.get_by_role("link", name="Naar uw aanmelding").click()

    # Deleting one's data asks first (and "Nee, terug" goes back without deleting).
    page.get_by_role("link", name="Mijn gegevens verwijderen").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Mijn gegevens verwijderen")
    assert_accessible(page, "erase")
    page.get_by_role("link", name="Nee, terug").click()
    expect(page).to_have_url(link)

    page.get_by_role("link", name=t["cancel"], exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(t["cancel"])
    expect(main).to_contain_text(t["cancel_question"])
    assert_accessible(page, "cancel")
    screenshot(page, "cancel")
    page.get_by_role("button", name=t["cancel_yes"]).click()

    expect(page).to_have_url(link)
    expect(page.get_by_role("status")).to_contain_text(t["cancelled_flash"])
    expect(main).to_contain_text(t["cancelled"])
    expect(page.get_by_role("link", name=t["cancel"], exact=True)).to_have_count(0)
    live.mails_to(email, subject_contains=t["cancelled_subject"])


@pytest.mark.parametrize("lang", ["nl", "en"])
def test_organiser_reschedules_with_a_reason_and_the_public_page_shows_the_move(live, page, lang):
    t = TEXT[lang]
    title = f"Samen onderwijs versnellen ({lang})"
    slug, event_id = live.make_event(title=title)
    attendee = f"els.{lang}@example.org"
    live.register(slug, attendee, name="Els Visser")
    live.mails_to(attendee, subject_contains=TEXT["nl"]["confirmation_subject"])

    page.goto("/inloggen")
    choose_language(page, lang)
    expect(page.get_by_role("heading", level=1)).to_have_text(t["login"])
    assert_accessible(page, "login")
    screenshot(page, "login")
    log_in(page, next_path="/beheer/")

    expect(page.get_by_role("heading", level=1)).to_have_text(t["events"])
    expect(page.get_by_role("link", name=title)).to_be_visible()
    assert_accessible(page, "organiser-events")
    screenshot(page, "organiser-events")

    page.goto(f"/beheer/{event_id}/verplaatsen")
    expect(page.get_by_role("heading", level=1)).to_contain_text(t["reschedule"])
    assert_accessible(page, "reschedule-form")
    screenshot(page, "reschedule-form")

    old_page = page.context.new_page()  # the public page before the move: the old date, to compare
    old_page.goto(f"/e/{slug}")
    old_when = old_page.locator("dl.facts dd").first.inner_text().strip()
    old_page.close()

    # Without a reason the form refuses, and says so at the top and at the field.
    page.get_by_role("button", name=t["reschedule_submit"]).click()
    summary = page.get_by_role("alert").filter(has_text=t["problem"])
    expect(summary).to_be_focused()
    expect(summary.get_by_role("link")).to_have_count(1)
    expect(page.get_by_label(re.compile("^" + t["reason"]))).to_have_attribute("aria-invalid", "true")
    assert_accessible(page, "reschedule-form-errors")

    new_day = (datetime.now(AMSTERDAM) + timedelta(days=30)).date()
    page.get_by_label(t["date"], exact=True).fill(new_day.isoformat())
    page.get_by_label(t["start"], exact=True).fill("15:00")
    page.get_by_label(t["end"], exact=True).fill("16:15")
    reason = "het webinar van het ministerie van OCW"
    page.get_by_label(re.compile("^" + t["reason"])).fill(reason)
    page.get_by_role("button", name=t["reschedule_submit"]).click()
    expect(page).to_have_url(re.compile(rf"/beheer/{event_id}$"))
    expect(page.get_by_role("status")).to_be_visible()
    if t["moved_flash"]:
        expect(page.get_by_role("status")).to_contain_text(t["moved_flash"])
    assert_accessible(page, "organiser-event")
    screenshot(page, "organiser-event")

    page.goto(f"/e/{slug}")
    notice = page.locator(".notice-moved")
    expect(notice.get_by_role("heading", name=t["moved"])).to_be_visible()
    expect(notice.locator("s")).to_have_text(re.compile(re.escape(old_when.split(",")[0])))
    expect(notice).to_contain_text(reason)
    expect(notice.locator("strong")).to_contain_text("15.00–16.15 uur" if lang == "nl" else "15:00–16:15")
    assert_accessible(page, "event-rescheduled")
    screenshot(page, "event-rescheduled")

    [mail] = live.mails_to(attendee, subject_contains=TEXT["nl"]["rescheduled_subject"])
    assert reason in mail.get_body(("plain",)).get_content()
