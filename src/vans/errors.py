"""User-facing errors.

Every error a user can cause (bad file, bad manifest row, bad option) derives from
`VansError`; the CLI prints these as one clear message and exits non-zero without a
traceback. Anything else is a bug and keeps its traceback.
"""


class VansError(Exception):
    """An error caused by the user's input, reported without a traceback."""
