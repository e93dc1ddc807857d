"""The one exception type for problems a user can cause and fix."""


class UnlearnError(ValueError):
    """Bad input: the message is one line saying what is wrong and how to fix it.

    The CLI prints it as-is and exits with code 2; nothing is written before it can be raised.
    """
