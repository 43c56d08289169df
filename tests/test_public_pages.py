from datetime import datetime, timedelta, timezone

from eventsvc.formatting import format_when, render_markdown


def test_dutch_date_formatting():
    starts = datetime(2021, 6, 23, 10, 45, tzinfo=timezone.utc)
    ends = datetime(2021, 6, 23, 12, 0, tzinfo=timezone.utc)
    assert format_when(starts, ends, "Europe/Amsterdam", "nl") == "woensdag 23 juni 2021, 12.45–14.00 uur"
    assert format_when(starts, ends, "Europe/Amsterdam", "en") == "Wednesday 23 June 2021, 12:45–14:00"


def test_winter_time_is_shown_in_the_event_zone():
    starts = datetime(2026, 12, 9, 11, 45, tzinfo=timezone.utc)
    assert format_when(starts, starts + timedelta(hours=1), "Europe/Amsterdam", "nl") == \
        "woensdag 9 december 2026, 12.45–13.45 uur"


def test_markdown_is_sanitised():
    html = str(render_markdown("**vet** <script>alert(1)</script> [x](javascript:alert(1)) <img src=x onerror=alert(1)>"))
    assert "<strong>vet</strong>" in html
    assert "<script" not in html and "<img" not in html and 'href="javascript' not in html


def test_upcoming_lists_published_and_hides_past_and_drafts(client, make_event, now):
    make_event(title="Toekomstig gepubliceerd")
    make_event(title="Concept", status="draft")
    make_event(title="Voorbij", starts_at=now - timedelta(days=2))
    page = client.get("/").get_data(as_text=True)
    assert "Toekomstig gepubliceerd" in page
    assert "Concept" not in page and "Voorbij" not in page


def test_event_page_shows_the_key_facts_in_dutch(client, make_event):
    event = make_event(title="Samen onderwijs versnellen", audience="Schoolbestuurders",
                       starts_at=datetime(2031, 6, 23, 10, 45, tzinfo=timezone.utc),
                       ends_at=datetime(2031, 6, 23, 12, 0, tzinfo=timezone.utc), capacity=40,
                       description="Een *programma* <script>alert(1)</script>")
    page = client.get(f"/e/{event.slug}").get_data(as_text=True)
    assert "Samen onderwijs versnellen" in page
    assert "maandag 23 juni 2031, 12.45–14.00 uur" in page
    assert "Voor wie?" in page and "Schoolbestuurders" in page
    assert "Online" in page and "Mieke van den Berg" in page
    assert "Nog 40 plaatsen vrij" in page
    assert "<em>programma</em>" in page and "<script>alert" not in page
    assert 'lang="nl"' in page


def test_join_url_is_never_on_the_public_page(client, make_event):
    event = make_event()
    assert event.join_url not in client.get(f"/e/{event.slug}").get_data(as_text=True)
    assert event.join_url not in client.get("/").get_data(as_text=True)


def test_draft_and_unknown_events_are_not_found(client, make_event):
    draft = make_event(status="draft")
    assert client.get(f"/e/{draft.slug}").status_code == 404
    response = client.get("/e/bestaat-niet")
    assert response.status_code == 404
    assert "Pagina niet gevonden" in response.get_data(as_text=True)


def test_audience_filter(client, make_event):
    make_event(title="Voor besturen", audience="Schoolbestuurders")
    make_event(title="Voor leraren", audience="Leraren")
    page = client.get("/?voor=leraren").get_data(as_text=True)
    assert "Voor leraren" in page and "Voor besturen" not in page
    make_event(title="Voor de 100%-school", audience="100%_teams")
    for wildcard, shown in (("%25", ["Voor de 100%-school"]), ("_", ["Voor de 100%-school"]), ("r_n", [])):
        page = client.get(f"/?voor={wildcard}").get_data(as_text=True)
        titles = [t for t in ("Voor leraren", "Voor besturen", "Voor de 100%-school") if t in page]
        assert titles == shown, wildcard


def test_audience_filter_with_a_control_character_is_a_clear_400(client, make_event):
    make_event(audience="Leraren")
    for text in ("%00", "lera%0D%0Aren"):
        response = client.get(f"/?voor={text}")
        assert response.status_code == 400 and "Ongeldig verzoek" in response.get_data(as_text=True)
