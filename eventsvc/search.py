"""What a person types into a search field, as a SQL LIKE pattern that matches it literally.

LIKE reads `%` and `_` as wildcards: unescaped, a search for "_" lists every
registrant, and "50%" finds "50" followed by anything.
"""
from sqlalchemy import or_

LIKE_ESCAPE = "!"  # not a backslash: PostgreSQL and SQLite read one the same way only in a bound value


def containing(words: str) -> str:
    """The pattern for "contains `words`"; use it with `.like(pattern, escape=LIKE_ESCAPE)`."""
    escaped = words.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"


def any_contains(words: str, *columns):
    """The condition "one of `columns` contains `words`", literally (compare lowercased text)."""
    pattern = containing(words)
    return or_(*(column.like(pattern, escape=LIKE_ESCAPE) for column in columns))
