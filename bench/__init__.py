"""Benchmarks for eventsvc (issue 7): `make bench` or `python -m bench.run --help`.

Every figure is reported as a ratio to a ceiling measured in the same run on
the same machine: a bare Flask app (`bench.ceilings.bare_flask`), a minimal
Flask + Flask-SQLAlchemy insert app (`bench.ceilings.minimal_insert`) and a
plain smtplib loop (`bench.fanout`).
"""
