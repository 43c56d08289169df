"""Absolute links for mails, built from BASE_URL (the worker has no request)."""
from urllib.parse import urlsplit

from flask import current_app, has_request_context, url_for


def external_url(endpoint: str, **values) -> str:
    base = urlsplit(current_app.config["BASE_URL"])
    if has_request_context():
        path = url_for(endpoint, **values)
    else:
        adapter = current_app.url_map.bind(base.netloc, url_scheme=base.scheme or "https")
        path = adapter.build(endpoint, values)
    return f"{base.scheme}://{base.netloc}{base.path.rstrip('/')}{path}"


def mail_domain() -> str:
    return urlsplit(current_app.config["BASE_URL"]).hostname or "localhost"
