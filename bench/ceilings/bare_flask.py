"""Ceiling 1: a bare Flask app answering a constant page.

    gunicorn -w 2 bench.ceilings.bare_flask:app

GET on any path answers the same HTML page (with a hidden `csrf_token` input,
so the registration load generator can run its GET+POST loop against it);
POST on any path answers 303, doing no work. No session, no database, no
templates: the floor cost of Flask + gunicorn per request on this machine.
The page is padded to BENCH_BARE_PAGE_BYTES (default 6000) so its transfer
cost is close to the app's event page.
"""
import os

from flask import Flask, Response, redirect

app = Flask(__name__)

_SIZE = int(os.environ.get("BENCH_BARE_PAGE_BYTES", "6000"))
_HEAD = (
    '<!doctype html>\n<html lang="nl">\n<head><meta charset="utf-8"><title>Bare Flask ceiling</title></head>\n'
    '<body><main><h1>Bare Flask ceiling</h1>\n'
    '<form method="post" action="/e/bench">\n'
    '<input id="csrf_token" name="csrf_token" type="hidden" value="constant-token">\n'
    '<input name="name"><input name="email"><input name="organisation"><input name="role">\n'
    '<input name="consent" type="checkbox" value="y"><button type="submit">Aanmelden</button>\n'
    '</form>\n'
)
_TAIL = "</main></body>\n</html>\n"
_FILLER = "<p>" + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 2 + "</p>\n"
_body = _HEAD
while len(_body) + len(_FILLER) + len(_TAIL) <= _SIZE:
    _body += _FILLER
PAGE = (_body + _TAIL).encode()


@app.get("/", defaults={"path": ""})
@app.get("/<path:path>")
def page(path):
    return Response(PAGE, mimetype="text/html")


@app.post("/", defaults={"path": ""})
@app.post("/<path:path>")
def post(path):
    return redirect("/done", 303)
