"""The one exception type that reaches the user as a single line instead of a traceback."""


class UserError(Exception):
    """Bad input or a state the user can fix. The message says what was wrong and what to do."""


class OptionError(UserError):
    """A value an option (or a pipeline key) does not take: a usage error, exit status 2 on the command line."""
