"""'did you mean ...?' for a name that is not one of the known ones: every one-sentence error that lists what is
known says the closest name first, the same way."""

from __future__ import annotations

import difflib


def did_you_mean(name: str, known) -> str:
    """"did you mean 'jpeg'? " for the known name closest to `name`, or "" when none is close."""
    return "".join(f"did you mean {m!r}? " for m in difflib.get_close_matches(str(name), list(known), 1))
