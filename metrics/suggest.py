"""'did you mean ...?' for a name that is not one of the known ones: every one-sentence error that lists what is
known says the closest name first, the same way."""

from __future__ import annotations

import difflib


def did_you_mean(name: str, known, shown: dict | None = None) -> str:
    """"did you mean 'jpeg'? " for the known name closest to `name`, or "" when none is close; `shown` may say how
    the message writes a name."""
    close = difflib.get_close_matches(str(name), list(known), 1)
    return "".join(f"did you mean {(shown or {}).get(m, repr(m))}? " for m in close)
