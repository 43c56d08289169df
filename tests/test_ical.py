"""eventsvc.ical: invites, personal .ics and feed, read back by two parsers.

Self-contained on purpose (no conftest fixtures): run with --noconftest.
"""

import re
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import icalendar
import pytest

from eventsvc.ical import (
    CalendarEvent,
    Person,
    build_feed,
    build_invite,
    build_personal_calendar,
    google_calendar_url,
    outlook_calendar_url,
)

from .mailtools import read_with_vobject

UTC = timezone.utc
UID = "5f1b7f0e-3c5a-4a8e-9d1e-0c6f2b9a7d41"
DTSTAMP = datetime(2021, 6, 1, 8, 30, tzinfo=UTC)
ORGANIZER = Person("Alliantie Digitaal, Team Events", "events@example.org")
ATTENDEE = Person("Zoë van den Berg", "zoe@example.nl")

# (UTC start, UTC end, expected UTC offset in Amsterdam)
SUMMER_2021 = (datetime(2021, 6, 23, 10, 45, tzinfo=UTC), datetime(2021, 6, 23, 12, 0, tzinfo=UTC), 2)
WINTER_2026 = (datetime(2026, 12, 9, 11, 45, tzinfo=UTC), datetime(2026, 12, 9, 13, 0, tzinfo=UTC), 1)
# Beyond icalendar's default VTIMEZONE window (1970-2038).
SUMMER_2040 = (datetime(2040, 7, 4, 10, 45, tzinfo=UTC), datetime(2040, 7, 4, 12, 0, tzinfo=UTC), 2)


def make_event(starts_at=SUMMER_2021[0], ends_at=SUMMER_2021[1], **overrides):
    fields = dict(
        uid=UID, sequence=3, summary="Webinar: Samen werken aan data",
        description="Beste Gülşen,\nWelkom!\n\nDeelnemen: https://example.org/r/abc/join",
        location="https://example.org/r/abc/join", url="https://example.org/e/webinar",
        starts_at=starts_at, ends_at=ends_at, tzid="Europe/Amsterdam",
    )
    return CalendarEvent(**(fields | overrides))


def invite(event=None, method="REQUEST", organizer=ORGANIZER, attendee=ATTENDEE):
    return build_invite(event or make_event(), method=method, organizer=organizer,
                        attendee=attendee, dtstamp=DTSTAMP)


def parse(data: bytes) -> icalendar.Calendar:
    return icalendar.Calendar.from_ical(data)


def only_vevent(data: bytes) -> icalendar.Event:
    (vevent,) = parse(data).walk("VEVENT")
    return vevent


def unfolded_lines(data: bytes) -> list[str]:
    return data.decode("utf-8").replace("\r\n ", "").split("\r\n")


# --- invites ---------------------------------------------------------------


def test_invite_request_has_header_identity_and_people():
    data = invite()
    cal = parse(data)
    vevent = only_vevent(data)

    assert data.startswith(b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//eventsvc//eventsvc//NL\r\n")
    assert cal["METHOD"] == "REQUEST"
    assert cal["CALSCALE"] == "GREGORIAN"
    assert str(vevent["UID"]) == UID
    assert vevent["SEQUENCE"] == 3
    assert vevent["STATUS"] == "CONFIRMED"
    assert vevent["TRANSP"] == "OPAQUE"
    assert str(vevent["LOCATION"]) == "https://example.org/r/abc/join"
    assert str(vevent["URL"]) == "https://example.org/e/webinar"

    organizer = vevent["ORGANIZER"]
    assert str(organizer) == "mailto:events@example.org"
    assert organizer.params["CN"] == "Alliantie Digitaal, Team Events"
    attendee = vevent["ATTENDEE"]
    assert str(attendee) == "mailto:zoe@example.nl"
    assert dict(attendee.params) == {
        "CN": "Zoë van den Berg", "ROLE": "REQ-PARTICIPANT",
        "PARTSTAT": "NEEDS-ACTION", "RSVP": "TRUE",
    }


def test_invite_as_seen_by_vobject():
    vevent = read_with_vobject(invite()).vevent
    assert vevent.uid.value == UID
    assert vevent.sequence.value == "3"
    assert vevent.organizer.value == "mailto:events@example.org"
    assert vevent.organizer.params["CN"] == ["Alliantie Digitaal, Team Events"]
    (attendee,) = vevent.contents["attendee"]
    assert attendee.value == "mailto:zoe@example.nl"
    assert attendee.params["PARTSTAT"] == ["NEEDS-ACTION"]
    assert attendee.params["RSVP"] == ["TRUE"]
    assert attendee.params["ROLE"] == ["REQ-PARTICIPANT"]


def test_dtstamp_is_utc_and_times_carry_the_tzid_of_a_preceding_vtimezone():
    event = make_event()
    data = invite(event)
    lines = unfolded_lines(data)
    assert "DTSTAMP:20210601T083000Z" in lines
    assert "DTSTART;TZID=Europe/Amsterdam:20210623T124500" in lines
    assert "DTEND;TZID=Europe/Amsterdam:20210623T140000" in lines
    assert data.index(b"BEGIN:VTIMEZONE") < data.index(b"END:VTIMEZONE") < data.index(b"BEGIN:VEVENT")

    cal = parse(data)
    assert [c.name for c in cal.subcomponents] == ["VTIMEZONE", "VEVENT"]
    assert cal.timezones[0]["TZID"] == event.tzid
    assert cal.get_missing_tzids() == set()
    assert only_vevent(data).decoded("DTSTAMP") == DTSTAMP
    assert read_with_vobject(data).vevent.dtstamp.value == DTSTAMP


@pytest.mark.parametrize("start, end, offset_hours", [SUMMER_2021, WINTER_2026, SUMMER_2040],
                         ids=["summer-2021", "winter-2026", "summer-2040"])
def test_both_parsers_get_the_right_utc_times(start, end, offset_hours):
    data = invite(make_event(start, end))

    vevent = only_vevent(data)
    assert vevent.decoded("DTSTART").astimezone(UTC) == start
    assert vevent.decoded("DTEND").astimezone(UTC) == end

    vobject_event = read_with_vobject(data).vevent
    vstart, vend = vobject_event.dtstart.value, vobject_event.dtend.value
    assert vstart.tzinfo is not None and vend.tzinfo is not None
    assert vstart.utcoffset() == timedelta(hours=offset_hours)
    assert vstart.astimezone(UTC) == start
    assert vend.astimezone(UTC) == end


def test_vobject_needs_the_embedded_vtimezone_for_an_unknown_tzid():
    # Negative control for read_with_vobject: without the VTIMEZONE the renamed
    # zone is unknown, so vobject can only give a naive (floating) time.
    data = invite()
    without_vtimezone = re.sub(rb"BEGIN:VTIMEZONE\r\n.*?END:VTIMEZONE\r\n", b"", data, flags=re.S)
    assert b"VTIMEZONE" not in without_vtimezone
    assert read_with_vobject(without_vtimezone).vevent.dtstart.value.tzinfo is None


def test_cancel_keeps_uid_and_sequence_and_is_cancelled():
    event = make_event(sequence=7)
    cal = parse(invite(event, method="CANCEL"))
    (vevent,) = cal.walk("VEVENT")
    assert cal["METHOD"] == "CANCEL"
    assert vevent["STATUS"] == "CANCELLED"
    assert str(vevent["UID"]) == UID
    assert vevent["SEQUENCE"] == 7
    assert str(vevent["ATTENDEE"]) == "mailto:zoe@example.nl"

    vobject_cal = read_with_vobject(invite(event, method="CANCEL"))
    assert vobject_cal.method.value == "CANCEL"
    assert vobject_cal.vevent.status.value == "CANCELLED"


def test_request_for_a_cancelled_event_says_cancelled():
    assert only_vevent(invite(make_event(cancelled=True)))["STATUS"] == "CANCELLED"


def test_reschedule_is_the_same_uid_with_a_higher_sequence():
    before = only_vevent(invite(make_event(sequence=1)))
    after = only_vevent(invite(make_event(*WINTER_2026[:2], sequence=2)))
    assert before["UID"] == after["UID"]
    assert after["SEQUENCE"] > before["SEQUENCE"]


@pytest.mark.parametrize("method", ["PUBLISH", "request", "REPLY", ""])
def test_unknown_method_is_refused(method):
    with pytest.raises(ValueError):
        invite(method=method)


@pytest.mark.parametrize("attendee_email", ["events@example.org", "Events@Example.ORG"])
def test_organizer_is_never_the_recipient(attendee_email):
    with pytest.raises(ValueError):
        invite(attendee=Person("Someone", attendee_email))


def test_naive_times_are_refused():
    with pytest.raises(ValueError):
        invite(make_event(starts_at=datetime(2021, 6, 23, 10, 45)))
    with pytest.raises(ValueError):
        build_personal_calendar(make_event(), dtstamp=datetime(2021, 6, 1))


# --- hostile text ------------------------------------------------------------


def test_line_breaks_in_names_and_summary_do_not_inject_properties():
    event = make_event(
        summary="Gewijzigd\r\nATTENDEE:mailto:evil@example.com\nX-INJECTED:1",
        location="Zaal 1\r\nORGANIZER:mailto:evil@example.com",
    )
    organizer = Person('Team "Events"; NL, Zoë\r\nATTENDEE:mailto:evil@example.com', "events@example.org")
    attendee = Person("Gülşen \u2028O'Brien, Jr.; \"Dr\"\nX-EVIL:1\x00\x1b", "gulsen@example.nl\r\n")
    data = invite(event, organizer=organizer, attendee=attendee)

    vevent = only_vevent(data)
    names = [name for name, _ in vevent.property_items(recursive=False)][1:-1]  # drop BEGIN/END
    assert sorted(names) == sorted([
        "SUMMARY", "DTSTART", "DTEND", "DTSTAMP", "UID", "SEQUENCE", "ATTENDEE",
        "DESCRIPTION", "LOCATION", "ORGANIZER", "STATUS", "TRANSP", "URL",
    ])
    assert str(vevent["SUMMARY"]) == "Gewijzigd ATTENDEE:mailto:evil@example.com X-INJECTED:1"
    assert str(vevent["LOCATION"]) == "Zaal 1 ORGANIZER:mailto:evil@example.com"
    assert str(vevent["ATTENDEE"]) == "mailto:gulsen@example.nl"
    assert vevent["ATTENDEE"].params["CN"] == "Gülşen O'Brien, Jr.; 'Dr' X-EVIL:1"
    assert vevent["ORGANIZER"].params["CN"] == "Team 'Events'; NL, Zoë ATTENDEE:mailto:evil@example.com"

    # Textually too: exactly one content line per person, none injected.
    lines = unfolded_lines(data)
    assert sum(line.startswith("ATTENDEE") for line in lines) == 1
    assert sum(line.startswith("ORGANIZER") for line in lines) == 1
    assert not any(line.startswith("X-") for line in lines)

    vobject_event = read_with_vobject(data).vevent
    assert len(vobject_event.contents["attendee"]) == 1
    assert len(vobject_event.contents["organizer"]) == 1
    assert "x-injected" not in vobject_event.contents


def test_description_keeps_newlines_and_non_ascii():
    description = "Beste Zoë,\r\nTot woensdag!\rGroet,\nGülşen; team, \"events\""
    data = invite(make_event(description=description))
    expected = "Beste Zoë,\nTot woensdag!\nGroet,\nGülşen; team, \"events\""
    assert str(only_vevent(data)["DESCRIPTION"]) == expected
    assert read_with_vobject(data).vevent.description.value == expected
    assert "Gülşen".encode() in data


def test_output_is_crlf_and_folded_at_75_octets():
    data = invite(make_event(description="Zoë " * 80, summary="Gülşen " * 20))
    assert data.endswith(b"END:VCALENDAR\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 75


def test_empty_location_and_missing_url_are_left_out():
    vevent = only_vevent(invite(make_event(location="", url=None)))
    assert "LOCATION" not in vevent
    assert "URL" not in vevent


# --- personal .ics and feed ----------------------------------------------------


def test_personal_calendar_is_publish_with_the_mail_uid_and_sequence():
    event = make_event(sequence=4)
    data = build_personal_calendar(event, dtstamp=DTSTAMP)
    cal = parse(data)
    vevent = only_vevent(data)
    mailed = only_vevent(invite(event))
    assert cal["METHOD"] == "PUBLISH"
    assert (vevent["UID"], vevent["SEQUENCE"]) == (mailed["UID"], mailed["SEQUENCE"])
    assert vevent["STATUS"] == "CONFIRMED"
    assert b"ORGANIZER" not in data and b"ATTENDEE" not in data
    assert [c.name for c in cal.subcomponents] == ["VTIMEZONE", "VEVENT"]
    assert read_with_vobject(data).vevent.dtstart.value.astimezone(UTC) == event.starts_at


def test_feed_has_one_vtimezone_per_zone_and_no_people():
    new_york_start = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)  # 10:00 EDT, 2 days after US DST start
    events = [
        make_event(uid="a1", summary="Zomer"),
        make_event(*WINTER_2026[:2], uid="b2", summary="Winter (afgelast)", cancelled=True),
        # Summer in a later year: only right if every RDATE of the VTIMEZONE is read.
        make_event(datetime(2024, 6, 5, 10, 45, tzinfo=UTC), datetime(2024, 6, 5, 12, tzinfo=UTC),
                   uid="d4", summary="Zomer 2024"),
        make_event(new_york_start, new_york_start + timedelta(hours=1), uid="c3",
                   summary="New York", tzid="America/New_York", location="", url=None),
    ]
    data = build_feed(events, name="Webinars, Alliantie", dtstamp=DTSTAMP)
    cal = parse(data)

    assert cal["METHOD"] == "PUBLISH"
    assert str(cal["X-WR-CALNAME"]) == "Webinars, Alliantie"
    assert [c.name for c in cal.subcomponents] == ["VTIMEZONE"] * 2 + ["VEVENT"] * 4
    assert [str(tz["TZID"]) for tz in cal.timezones] == ["America/New_York", "Europe/Amsterdam"]
    assert cal.get_missing_tzids() == set()
    assert b"ORGANIZER" not in data and b"ATTENDEE" not in data

    by_uid = {str(e["UID"]): e for e in cal.walk("VEVENT")}
    assert {uid: e["STATUS"] for uid, e in by_uid.items()} == {
        "a1": "CONFIRMED", "b2": "CANCELLED", "c3": "CONFIRMED", "d4": "CONFIRMED"}
    assert by_uid["c3"]["DTSTART"].params["TZID"] == "America/New_York"

    # One Amsterdam VTIMEZONE has to serve 2021, 2024 and 2026.
    expected = {e.uid: (e.starts_at, e.ends_at) for e in events}
    for vevent in read_with_vobject(data).vevent_list:
        start, end = vevent.dtstart.value, vevent.dtend.value
        assert start.tzinfo is not None
        assert (start.astimezone(UTC), end.astimezone(UTC)) == expected[vevent.uid.value]
    for uid, vevent in by_uid.items():
        assert vevent.decoded("DTSTART").astimezone(UTC) == expected[uid][0]


def test_feed_output_is_deterministic():
    events = [make_event(uid="x", tzid="Europe/London"), make_event(uid="y", tzid="Asia/Tokyo"),
              make_event(uid="z")]
    assert build_feed(events, name="f", dtstamp=DTSTAMP) == build_feed(events, name="f", dtstamp=DTSTAMP)


def test_empty_feed_is_still_a_valid_calendar():
    cal = parse(build_feed([], name="Leeg", dtstamp=DTSTAMP))
    assert cal["METHOD"] == "PUBLISH" and cal.walk("VEVENT") == []


# --- "add to calendar" links ---------------------------------------------------


def query(url: str) -> dict[str, str]:
    return {k: v for k, (v,) in parse_qs(urlsplit(url).query).items()}


@pytest.mark.parametrize("start, end, dates, startdt, enddt", [
    (*SUMMER_2021[:2], "20210623T104500Z/20210623T120000Z", "2021-06-23T10:45:00Z", "2021-06-23T12:00:00Z"),
    (*WINTER_2026[:2], "20261209T114500Z/20261209T130000Z", "2026-12-09T11:45:00Z", "2026-12-09T13:00:00Z"),
])
def test_add_to_calendar_links_use_utc(start, end, dates, startdt, enddt):
    event = make_event(start, end, summary="Zoë & co: 50% korting?")
    details = "Aanmelding: https://example.org/r/abc?x=1&y=2"

    google = google_calendar_url(event, details)
    assert google.startswith("https://calendar.google.com/calendar/render?")
    assert query(google) == {
        "action": "TEMPLATE", "text": "Zoë & co: 50% korting?", "dates": dates,
        "details": details, "location": "https://example.org/r/abc/join", "ctz": "Europe/Amsterdam",
    }

    outlook = outlook_calendar_url(event, details)
    assert outlook.startswith("https://outlook.live.com/calendar/0/action/compose?")
    assert query(outlook) == {
        "rru": "addevent", "subject": "Zoë & co: 50% korting?", "startdt": startdt, "enddt": enddt,
        "body": details, "location": "https://example.org/r/abc/join",
    }
