"""Data set-up that needs the app's models, run as a short process with the app's env.

    python -m bench.appdata create-events '[{"slug": "bench-x", "capacity": 1000}]'
    python -m bench.appdata bulk-registrations bench-fanout 10000
    python -m bench.appdata reschedule bench-fanout
    python -m bench.appdata has-reschedule

Each prints one JSON object on stdout. Everything goes through `create_app()`
with the environment the benchmark gives it (production config, the
throw-away DATABASE_URL), so it uses the same models and database as the
gunicorn processes under test.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import timedelta

EVENT_DEFAULTS = dict(
    title="Benchmarkbijeenkomst", summary="Een bijeenkomst om de aanmelding mee te meten.",
    description="Een **benchmark**: veel mensen melden zich tegelijk aan.\n\n- punt een\n- punt twee\n",
    audience="Schoolbestuurders en gemeentelijke beleidsadviseurs", region="Landelijk",
    organised_by="De alliantie van Sardes, CAOP en Kennisland",
    contact_name="Mieke van den Berg", contact_email="mieke@example.org",
    mode="online", location="", join_url="https://meet.example.org/bench-secret-room",
    timezone="Europe/Amsterdam", status="published",
)


def _app():
    from eventsvc import create_app

    return create_app()


def create_events(specs: list[dict]) -> dict:
    from eventsvc.events.models import Event
    from eventsvc.extensions import db
    from eventsvc.types import utcnow

    app = _app()
    with app.app_context():
        now = utcnow().replace(microsecond=0)
        ids = {}
        for i, spec in enumerate(specs):
            values = dict(EVENT_DEFAULTS, title=f"Benchmarkbijeenkomst {i + 1}",
                          starts_at=now + timedelta(days=30 + i, hours=2))
            values.update(spec)
            values.setdefault("ends_at", values["starts_at"] + timedelta(hours=1, minutes=15))
            event = Event(**values)
            db.session.add(event)
            db.session.flush()
            ids[event.slug] = event.id
        db.session.commit()
        return {"events": ids}


def bulk_registrations(slug: str, n: int, chunk: int = 5000) -> dict:
    """n confirmed registrations (and their already-sent confirmations), with executemany."""
    from sqlalchemy import insert, select, update

    from eventsvc.events.models import Event
    from eventsvc.extensions import db
    from eventsvc.outbox.models import Message
    from eventsvc.registrations.models import Registration
    from eventsvc.types import utcnow

    app = _app()
    with app.app_context():
        event = db.session.scalar(select(Event).where(Event.slug == slug))
        now = utcnow()
        t0 = time.perf_counter()
        done = 0
        while done < n:
            size = min(chunk, n - done)
            rows = []
            for i in range(done, done + size):
                email = f"deelnemer{i}@bench.example.org"
                rows.append(dict(event_id=event.id, name=f"Deelnemer {i}", email=email, email_normalized=email,
                                 organisation="Bench BV", role="Tester", status="confirmed", locale="nl",
                                 consent_at=now, registered_at=now))
            db.session.execute(insert(Registration.__table__), rows)
            ids = db.session.scalars(
                select(Registration.id).where(Registration.event_id == event.id)
                .order_by(Registration.id.desc()).limit(size)).all()
            db.session.execute(insert(Message.__table__), [
                dict(kind="confirmation", event_id=event.id, registration_id=rid,
                     dedupe_key=f"confirmation:{rid}:bench", payload={}, send_after=now, status="sent",
                     attempts=1, created_at=now, sent_at=now) for rid in ids])
            db.session.commit()
            done += size
        db.session.execute(update(Event).where(Event.id == event.id)
                           .values(confirmed_count=Event.confirmed_count + n))
        db.session.commit()
        return {"event_id": event.id, "registrations": n, "seconds": round(time.perf_counter() - t0, 3)}


# Where the reschedule service may live: the agreed place first.
RESCHEDULE_MODULES = ("eventsvc.events.services", "eventsvc.events.management")


def find_reschedule():
    """(function, "module.reschedule_event") or (None, why)."""
    import importlib

    why = []
    for name in RESCHEDULE_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            why.append(f"{name}: {error}")
            continue
        function = getattr(module, "reschedule_event", None)
        if callable(function):
            return function, f"{name}.reschedule_event"
        why.append(f"{name} has no reschedule_event")
    return None, "; ".join(why)


def has_reschedule() -> dict:
    app = _app()
    with app.app_context():
        function, where = find_reschedule()
    return {"available": function is not None, "where" if function else "why": where}


def reschedule(slug: str, days: int = 7) -> dict:
    """Move the event by `days`, through the service; time until it returns (it commits)."""
    from sqlalchemy import func, select

    from eventsvc.events.models import Event
    from eventsvc.extensions import db
    from eventsvc.outbox.models import Message

    app = _app()
    with app.app_context():
        reschedule_event, where = find_reschedule()
        event = db.session.scalar(select(Event).where(Event.slug == slug))
        starts_at, ends_at = event.starts_at + timedelta(days=days), event.ends_at + timedelta(days=days)
        t0 = time.perf_counter()
        reschedule_event(event, starts_at=starts_at, ends_at=ends_at, reason="de benchmark")
        seconds = time.perf_counter() - t0
        db.session.rollback()  # nothing may be left uncommitted: a fresh read below
        queued = db.session.scalar(select(func.count(Message.id)).where(
            Message.event_id == event.id, Message.kind == "rescheduled"))
        pending = db.session.scalar(select(func.count(Message.id)).where(
            Message.event_id == event.id, Message.kind != "confirmation", Message.status == "pending"))
        return {"seconds": round(seconds, 3), "rescheduled_rows": queued, "pending_rows": pending, "service": where}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command, args = argv[0], argv[1:]
    if command == "create-events":
        result = create_events(json.loads(args[0]))
    elif command == "bulk-registrations":
        result = bulk_registrations(args[0], int(args[1]))
    elif command == "has-reschedule":
        result = has_reschedule()
    elif command == "reschedule":
        result = reschedule(args[0])
    else:
        raise SystemExit(f"unknown command {command!r}")
    json.dump(result, sys.stdout, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
