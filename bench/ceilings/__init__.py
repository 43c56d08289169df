"""Ceiling apps: the least Flask (and Flask + a database) can do per request.

Both are WSGI apps for gunicorn: `gunicorn bench.ceilings.bare_flask:app`,
`gunicorn bench.ceilings.minimal_insert:app` (the latter reads DATABASE_URL).
"""
