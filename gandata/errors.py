"""The one exception type that reaches the user as a single line instead of a traceback."""


class UserError(Exception):
    """Bad input or a state the user can fix. The message says what was wrong and what to do."""


class OptionError(UserError):
    """A value an option (or a pipeline key) does not take: a usage error, exit status 2 on the command line."""


class FormatError(UserError):
    """A file whose content is not what its format says — a shard set's ``dataset.json``, a checkpoint, a shard's
    members (``.cls``, images), a run's summary — validated whole when it is read; the message names the file and
    the field."""
