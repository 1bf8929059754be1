"""The one exception type that reaches the user as a single line instead of a traceback."""


class UserError(Exception):
    """Bad input or a state the user can fix. The message says what was wrong and what to do."""
