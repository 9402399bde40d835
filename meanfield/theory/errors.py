"""The one exception type for bad input, shared by every layer."""


class InputError(ValueError):
    """Bad user input: names the parameter and what is allowed.

    A ``ValueError`` so Python callers can catch it the usual way; the CLI turns it
    into one line on stderr and exit code 2.
    """

    def __init__(self, parameter: str, allowed: str, got: object = None) -> None:
        self.parameter = parameter
        self.allowed = allowed
        self.got = got
        msg = f"{parameter}: {allowed}"
        if got is not None:
            msg += f" (got {got!r})"
        super().__init__(msg)
