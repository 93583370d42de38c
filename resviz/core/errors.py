"""User-facing errors.

Everything the user can get wrong (a model name, a spec field, a Python file that will not
import, an archive that is really a state dict) raises a :class:`ResvizError` whose message is a
short paragraph in words. The command line prints that paragraph and exits with status 2; it never
shows a traceback for these.
"""

from __future__ import annotations


class ResvizError(Exception):
    """A problem with the user's input, explained in words."""


class LoadError(ResvizError):
    """The model could not be found, read, imported or built."""


class NeedsTrust(LoadError):
    """The file can only be opened by unpickling (part of) it, which runs any code it names.

    ``str(exc)`` is the command line's paragraph (it says to pass ``--trust``); ``reason`` is the
    same paragraph without that advice, for front ends that offer trust their own way (the app's
    "Trust this file…" action). ``path`` is the file to trust.
    """

    def __init__(self, message: str, reason: str, path: str | None = None):
        self.reason = reason
        self.path = path
        super().__init__(message)


class SpecError(LoadError):
    """A declarative spec is malformed.

    The message always names the file, the field (as a dotted path such as ``stages[2].stride``)
    and what was expected.
    """

    def __init__(self, path: str | None, field: str | None, message: str, line: int | None = None):
        self.path = path
        self.field = field
        self.line = line
        where = path or "<spec>"
        if line is not None:
            where += f":{line}"
        prefix = f"{where}: " + (f"field '{field}': " if field else "")
        super().__init__(prefix + message)


class ShapeSyntaxError(ResvizError):
    """An input shape such as ``1x3x224x224`` could not be parsed."""


class Terminated(BaseException):
    """SIGTERM arrived (``timeout``, a scheduler, ``docker stop``): unwind and stop now.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` in resviz or in the
    user's code swallows it; the command line exits with status 143.
    """
