"""What a person types into a search field, as a SQL LIKE pattern that matches it literally.

LIKE reads `%` and `_` as wildcards: unescaped, a search for "_" lists every
registrant, and "50%" finds "50" followed by anything.
"""
LIKE_ESCAPE = "!"  # not a backslash: PostgreSQL and SQLite read one the same way only in a bound value


def containing(words: str) -> str:
    """The pattern for "contains `words`"; use it with `.like(pattern, escape=LIKE_ESCAPE)`."""
    escaped = words.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"
