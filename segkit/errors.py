"""The one exception type that reaches the user as a single line.

Anything the user can fix (a missing folder, an unknown name, a corrupt file) raises
`UserError`; the scripts print it as `error: <message>` and exit with status 2.
It subclasses ValueError so library callers can catch it the usual way.
"""


class UserError(ValueError):
    """A problem with the user's input, worded so the user can fix it."""
