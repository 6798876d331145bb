"""The base class of every error ctrlsparse raises on purpose.

Each library error also derives from the built-in it refines (``ValueError`` for bad
input, ``OSError`` for downloads, ...), so ``except ValueError`` keeps working, and the
command line prints any :class:`CtrlsparseError` as one message without hiding real bugs.

Examples:
    >>> from ctrlsparse.experiments.config import ProblemFileError
    >>> issubclass(ProblemFileError, CtrlsparseError) and issubclass(ProblemFileError, ValueError)
    True
"""


class CtrlsparseError(Exception):
    """An error ctrlsparse raises with a message a user can act on."""


class NonFiniteLossError(CtrlsparseError, FloatingPointError):
    """The training loss or a constraint's violation became NaN or infinite.

    :class:`~ctrlsparse.GDA` raises it before that step updates any parameter or multiplier,
    so the model and the last checkpoint hold the state of the step before.
    """
