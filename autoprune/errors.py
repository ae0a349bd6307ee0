"""User-facing errors.

Anything the user can fix (a typo in a model name, a missing file, a malformed profile) is raised as
:class:`UserError`; the CLI prints its message as one line and exits with code 2. Everything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input the user can fix. ``str(err)`` says what is wrong and how to fix it."""


def unknown_choice(kind: str, value: str, choices: Iterable[str], hint: str = "") -> UserError:
    """Build the error for an unknown name, listing close matches (or a few valid choices)."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(value, choices, n=3, cutoff=0.6)
    if close:
        suggestion = "did you mean " + " or ".join(repr(c) for c in close) + "?"
    else:
        shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
        suggestion = f"valid choices: {shown}"
    tail = f" ({hint})" if hint else ""
    return UserError(f"unknown {kind} {value!r}: {suggestion}{tail}")
