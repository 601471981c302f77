"""The one exception type the CLI turns into a single ``error: ...`` line and a non-zero exit."""


class SplatPortraitError(Exception):
    """A problem with the user's input or environment, explained in one line.

    Raise it with a message that says what is wrong and, where possible, what to do about it.
    Anything else that escapes is a bug and keeps its traceback.
    """
