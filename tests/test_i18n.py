"""Dutch first, English second: the catalogue, the language choice, English mail and dates."""
import html
import io
import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po
from sqlalchemy import select

from eventsvc.extensions import db
from eventsvc.formatting import format_when
from eventsvc.i18n import safe_next
from eventsvc.registrations.models import Registration

from .conftest import csrf_token
from .mailtools import deliver

PROJECT = Path(__file__).resolve().parent.parent
EN_PO = PROJECT / "translations" / "en" / "LC_MESSAGES" / "messages.po"
EN_MO = EN_PO.with_suffix(".mo")
# The same keywords as `pybabel extract -F babel.cfg -k _l -k lazy_gettext` (see babel.cfg).
KEYWORDS = {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None}
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")

SUMMER = (datetime(2031, 6, 23, 10, 45, tzinfo=timezone.utc), datetime(2031, 6, 23, 12, 0, tzinfo=timezone.utc))
ENGLISH = {"Accept-Language": "en-GB,en;q=0.9"}
DUTCH = {"Accept-Language": "nl-NL,nl;q=0.9,en;q=0.8"}


def extract_catalog(pot_path: Path) -> Catalog:
    """What `pybabel extract -F babel.cfg -k _l -k lazy_gettext -o <pot_path> .` produces, read back."""
    with open(PROJECT / "babel.cfg", encoding="utf-8") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg, str(PROJECT / "babel.cfg"))
    catalog = Catalog(project="eventsvc")
    for filename, lineno, message, comments, context in extract_from_dir(
            str(PROJECT), method_map, options_map, keywords=KEYWORDS):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    with open(pot_path, "wb") as out:
        write_po(out, catalog)
    with open(pot_path, "rb") as pot:
        return read_po(pot)


def english_catalog() -> Catalog:
    with open(EN_PO, "rb") as po:
        return read_po(po, locale="en")


def show(message) -> str:
    return repr(message.id) + "".join(f"\n      at {f}:{n}" for f, n in message.locations[:3])


# --- The catalogue --------------------------------------------------------------------------

def test_every_source_string_has_a_finished_english_translation(tmp_path):
    """A new `_()` string in Python or a template without an English translation fails here.

    Fix: re-extract and update (see babel.cfg), translate the new entries in
    translations/en/LC_MESSAGES/messages.po, then `make translations`."""
    source = extract_catalog(tmp_path / "messages.pot")
    english = english_catalog()
    assert len(source) > 100, "extraction found almost nothing; is babel.cfg right?"
    missing, untranslated, fuzzy, placeholders = [], [], [], []
    for message in source:
        if not message.id:
            continue
        entry = english.get(message.id, context=message.context)
        if entry is None:
            missing.append(message)
            continue
        forms = entry.string if isinstance(entry.string, (tuple, list)) else (entry.string,)
        if not all(forms):
            untranslated.append(message)
        elif entry.fuzzy:
            fuzzy.append(message)
        else:
            ids = message.id if isinstance(message.id, (tuple, list)) else (message.id,)
            wanted = set(PLACEHOLDER.findall(" ".join(ids)))
            if any(set(PLACEHOLDER.findall(form)) != wanted for form in forms):
                placeholders.append(message)
    report = []
    for title, items in (("not in the English catalogue", missing), ("untranslated", untranslated),
                         ("fuzzy (check and remove the flag)", fuzzy),
                         ("placeholders differ from the source", placeholders)):
        if items:
            report.append(f"{len(items)} {title}:\n    " + "\n    ".join(show(m) for m in items))
    assert not report, "English catalogue incomplete:\n  " + "\n  ".join(report)


def test_english_catalogue_has_valid_python_formats_and_plurals():
    english = english_catalog()
    problems = [f"{m.id!r}: {', '.join(map(str, errors))}" for m, errors in english.check()]
    assert not problems, "\n".join(problems)
    assert english.num_plurals == 2


def test_compiled_catalogue_is_up_to_date():
    """The app reads the .mo; an edited .po that was not compiled would test stale text."""
    expected = io.BytesIO()
    write_mo(expected, english_catalog())
    assert EN_MO.exists() and EN_MO.read_bytes() == expected.getvalue(), \
        "translations/en/LC_MESSAGES/messages.mo is missing or stale: run `make translations`"


# --- Dates ----------------------------------------------------------------------------------

def test_dates_read_naturally_in_both_languages():
    starts, ends = (datetime(2021, 6, 23, 10, 45, tzinfo=timezone.utc),
                    datetime(2021, 6, 23, 12, 0, tzinfo=timezone.utc))
    assert format_when(starts, ends, "Europe/Amsterdam", "en") == "Wednesday 23 June 2021, 12:45–14:00"
    assert format_when(starts, ends, "Europe/Amsterdam", "nl") == "woensdag 23 juni 2021, 12.45–14.00 uur"


# --- Choosing the language ------------------------------------------------------------------

def test_english_browser_gets_english_pages(client, make_event):
    event = make_event(starts_at=SUMMER[0], ends_at=SUMMER[1], capacity=10)
    page = client.get(f"/e/{event.slug}", headers=ENGLISH).get_data(as_text=True)
    assert '<html lang="en">' in page
    for text in ("Who is it for?", "Skip to content", "Email address", "10 places left",
                 "Monday 23 June 2031, 12:45–14:00", ">Register</button>"):
        assert text in page, text
    for dutch in ("Voor wie?", "Naar de inhoud", "E-mailadres", "14.00 uur"):
        assert dutch not in page, dutch


@pytest.mark.parametrize("headers", [DUTCH, {}, {"Accept-Language": "de-DE,fr;q=0.5"}],
                         ids=["dutch", "no-preference", "neither"])
def test_dutch_browser_or_no_preference_gets_dutch(client, make_event, headers):
    event = make_event(starts_at=SUMMER[0], ends_at=SUMMER[1], capacity=1)
    page = client.get(f"/e/{event.slug}", headers=headers).get_data(as_text=True)
    assert '<html lang="nl">' in page
    for text in ("Voor wie?", "Nog 1 plaats vrij", "maandag 23 juni 2031, 12.45–14.00 uur", ">Aanmelden</button>"):
        assert text in page, text
    assert "Who is it for?" not in page


def test_form_errors_and_error_pages_follow_the_language(client, make_event):
    event = make_event()
    token = csrf_token(client, f"/e/{event.slug}")
    response = client.post(f"/e/{event.slug}", data={"csrf_token": token, "email": "nope"}, headers=ENGLISH)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "There is a problem" in page and "Enter your name." in page
    assert "Enter a valid email address, such as name@example.com." in page
    missing = client.get("/e/does-not-exist", headers=ENGLISH)
    assert missing.status_code == 404 and "Page not found" in missing.get_data(as_text=True)
    assert "Pagina niet gevonden" in client.get("/e/does-not-exist", headers=DUTCH).get_data(as_text=True)


def test_switcher_is_in_the_header_with_the_current_language_marked(client, make_event):
    event = make_event()
    page = client.get(f"/e/{event.slug}?voor=x", headers=DUTCH).get_data(as_text=True)
    header = page.split('<header class="site-header">', 1)[1].split("</header>", 1)[0]
    switcher = re.search(r'<nav class="language-switch" aria-label="Taal">(.*?)</nav>', header, re.S)
    assert switcher, header
    links = {lang: (href, rest) for href, lang, rest in
             re.findall(r'<a href="([^"]+)" lang="(nl|en)"([^>]*)>', switcher.group(1))}
    assert set(links) == {"nl", "en"}
    href = urlsplit(html.unescape(links["en"][0]))
    assert href.path == "/taal" and parse_qs(href.query) == {"lang": ["en"], "next": [f"/e/{event.slug}?voor=x"]}
    assert 'rel="nofollow"' in links["en"][1] and 'aria-current' not in links["en"][1]
    assert 'aria-current="true"' in links["nl"][1]


def switch(client, lang, next_path, headers=ENGLISH):
    """Follow the switcher's link for `lang`, as a browser does."""
    return client.get("/taal", query_string={"lang": lang, "next": next_path}, headers=headers)


def test_a_page_without_a_form_of_its_own_gives_a_new_visitor_no_session(client, make_event):
    make_event()
    response = client.get("/", headers=DUTCH)
    assert response.status_code == 200 and "Set-Cookie" not in response.headers
    page = response.get_data(as_text=True)
    assert 'name="csrf_token"' not in page and 'href="/taal?lang=en&amp;next=/"' in page


def test_the_switch_answer_is_never_cached_or_indexed(client, make_event):
    event = make_event()
    response = switch(client, "en", f"/e/{event.slug}")
    assert response.status_code == 303 and response.headers["Location"] == f"/e/{event.slug}"
    assert response.headers["Cache-Control"] == "no-store"
    assert "noindex" in response.headers["X-Robots-Tag"]


def test_explicit_choice_overrides_the_browser_and_is_remembered(client, make_event):
    event = make_event()
    path = f"/e/{event.slug}"
    assert "Who is it for?" in client.get(path, headers=ENGLISH).get_data(as_text=True)

    response = switch(client, "nl", path)
    assert response.status_code == 303 and response.headers["Location"] == path
    cookie = response.headers["Set-Cookie"]
    assert "Expires=" in cookie, "the choice must outlive the browser session (session.permanent)"
    for _ in range(2):  # remembered on every later request, whatever the browser says
        page = client.get(path, headers=ENGLISH).get_data(as_text=True)
        assert "Voor wie?" in page and '<html lang="nl">' in page

    switch(client, "en", path, headers=DUTCH)
    page = client.get(path, headers=DUTCH).get_data(as_text=True)
    assert "Who is it for?" in page and '<html lang="en">' in page
    assert re.search(r'lang="en" hreflang="en"\s+rel="nofollow" aria-current="true"', page)


def test_a_head_request_for_the_switch_is_answered_as_a_get(client):
    assert client.head("/taal", query_string={"lang": "en", "next": "/"}).status_code == 303


def test_pages_say_they_vary_with_the_browser_language(client, make_event):
    """Without a session a page's language comes from Accept-Language: a cache in front must know."""
    event = make_event()
    for path in ("/", f"/e/{event.slug}", "/privacy"):
        assert "Accept-Language" in client.get(path).headers.get("Vary", ""), path


def test_switch_needs_a_known_language_and_a_post_needs_a_csrf_token(client, make_event):
    event = make_event()
    path = f"/e/{event.slug}"
    # A form posted from a page of an earlier version still works, with its token only.
    refused = client.post("/taal", data={"lang": "en", "next": path}, headers=DUTCH)
    assert refused.status_code == 400
    assert "Voor wie?" in client.get(path, headers=DUTCH).get_data(as_text=True)
    for lang in ("fr", "", None):
        assert client.get("/taal", query_string={"lang": lang, "next": path}).status_code == 400
    with client.session_transaction() as session:
        assert "lang" not in session
    posted = client.post("/taal", data={"lang": "en", "next": path, "csrf_token": csrf_token(client, path)},
                         headers=DUTCH)
    assert posted.status_code == 303 and posted.headers["Location"] == path
    assert "Who is it for?" in client.get(path, headers=DUTCH).get_data(as_text=True)


@pytest.mark.parametrize("target", [
    "https://evil.example/", "http://evil.example", "//evil.example/path", "///evil.example",
    "/\\evil.example", "\\\\evil.example", "/\\/evil.example", "/\t/evil.example", "/ /evil.example",
    "/\r\nSet-Cookie: x=1", "javascript:alert(1)", "evil.example", "https:/evil.example",
    "HTTPS://evil.example", "", None])
def test_next_that_is_not_a_local_path_goes_home(target):
    assert safe_next(target) == "/"


@pytest.mark.parametrize("target, expected", [
    ("/", "/"), ("/e/demo", "/e/demo"), ("/e/demo?voor=raad", "/e/demo?voor=raad"), ("/e/demo?", "/e/demo"),
    ("/r/abc_DEF-123/annuleren", "/r/abc_DEF-123/annuleren")])
def test_next_local_paths_are_kept(target, expected):
    assert safe_next(target) == expected


def test_switch_never_redirects_off_site(client):
    for target in ("https://evil.example/", "//evil.example", "/\\evil.example", "\\/evil.example"):
        response = switch(client, "en", target)
        assert response.status_code == 303 and response.headers["Location"] == "/", target


# --- Mail in the registrant's language ------------------------------------------------------

def test_english_registrant_gets_english_mail(smtp, make_event, register):
    event = make_event(title="Working together", starts_at=SUMMER[0], ends_at=SUMMER[1])
    register(event, name="Ruud van 't Hof", locale="en")
    deliver()
    mail = smtp.wait_for(1)[0].message
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert mail["Subject"] == "Confirmed: Working together"
    assert "Dear Ruud van 't Hof," in text and "Monday 23 June 2031, 12:45–14:00" in text
    assert "View your registration, add it to your calendar or cancel it:" in text
    assert '<html lang="en">' in html and "Dear Ruud van &#39;t Hof," in html
    for dutch in ("Beste", "Wanneer", "uur", "aanmelding"):
        assert dutch not in text, dutch


def test_registering_from_an_english_page_gives_english_mail_and_dutch_stays_dutch(client, smtp, make_event):
    event = make_event(title="Working together", starts_at=SUMMER[0], ends_at=SUMMER[1])
    for email, headers in (("en@example.org", ENGLISH), ("nl@example.org", DUTCH)):
        data = {"name": "Sam", "email": email, "consent": "y",
                "csrf_token": csrf_token(client, f"/e/{event.slug}")}
        assert client.post(f"/e/{event.slug}", data=data, headers=headers).status_code == 303
    locales = {r.email: r.locale for r in db.session.scalars(select(Registration))}
    assert locales == {"en@example.org": "en", "nl@example.org": "nl"}
    deliver()
    subjects = {r.rcpt_tos[0]: r.message["Subject"] for r in smtp.wait_for(2)}
    assert subjects == {"en@example.org": "Confirmed: Working together",
                        "nl@example.org": "Bevestiging: Working together"}
