"""A registration through Flask's test client, in one process: what bench.instructions and
bench.inprocess measure, each around its own loop (callgrind's counters, CPU time)."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from .common import app_env, appdata, migrate, throwaway_database
from .loadgen import find_csrf_token, person_headers, registration_fields

TARGETS = ("eventsvc", "minimal-insert")
ORIGIN = "https://localhost"  # as behind the TLS-terminating proxy app_env sets up (PROXY_FIX_HOPS)


@contextmanager
def target_environment(target: str, backend: str, workdir: Path, *, slug: str, capacity: int, label: str):
    """The environment for running `target` in a process of its own, on a throw-away database;
    for eventsvc migrated, with one event `slug` of `capacity` seats."""
    with throwaway_database(backend, workdir, f"{label}-{target}") as url:
        env = app_env(url, workdir / f"instance-{target}")
        if target == "eventsvc":
            migrate(env)
            appdata(env, "create-events", json.dumps([{"slug": slug, "capacity": capacity}]))
        yield env


def load_app(target: str):
    if target == "eventsvc":
        import wsgi  # what gunicorn serves, start-up included (gc.freeze)

        return wsgi.app
    from .ceilings.minimal_insert import app

    return app


def get_form(client, path: str, n: int) -> str:
    """The n-th person GETs the form; its CSRF token."""
    page = client.get(path, headers=person_headers(n, True))
    token = find_csrf_token(page.data)
    if page.status_code != 200 or token is None:
        raise SystemExit(f"GET {path}: {page.status_code}, token {token!r}")
    return token


def post_form(client, path: str, n: int, token: str, prefix: str) -> None:
    """The n-th person POSTs the form, as a browser would; a registration must answer 303."""
    headers = {**person_headers(n, True), "Origin": ORIGIN, "Referer": ORIGIN + path}
    answer = client.post(path, headers=headers, data=registration_fields(token, n, prefix))
    if answer.status_code != 303:
        raise SystemExit(f"POST {path}: {answer.status_code}")
