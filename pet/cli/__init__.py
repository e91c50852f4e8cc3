"""The ``pet`` command line. Each module in this package registers one command group with a
``register(subparsers)`` function; handlers import heavy libraries (torch, ray) inside, so ``pet --help``
stays instant. Handlers raise :class:`CLIError` for user mistakes (exit 2, no traceback)."""


class CLIError(Exception):
    """A user-facing error: printed as ``pet: error: ...`` with exit code 2."""
