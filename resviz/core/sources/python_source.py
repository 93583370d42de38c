"""Whether a MODEL argument names a Python file: ``nets/model.py:ResNet`` → path and model name.

Apart from :mod:`~resviz.core.sources.pyfile` because it must not import torch: the command line and
the app decide with it to run the user's code in a child process before anything heavy is imported.
"""

from __future__ import annotations

import re

_PY_SOURCE = re.compile(r"^(?P<path>.+\.py)(?::(?P<name>[^:/\\]*))?$")


def split_python_source(source: str) -> tuple[str, str | None] | None:
    """``"nets/model.py:ResNet"`` → ``("nets/model.py", "ResNet")``; ``"model.py"`` → ``("model.py", None)``.

    Returns ``None`` when ``source`` does not name a Python file.
    """
    m = _PY_SOURCE.match(source)
    if not m:
        return None
    return m.group("path"), m.group("name") or None
