"""Where a command writes, checked before its work starts.

A command that computes for minutes and then cannot write its result has lost those minutes;
these checks make a folder that cannot be created or written, a file where a folder is needed
(or the reverse), one clear ``ValueError`` at the start instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["output_dir", "output_file"]


def _check_folder(folder: Path) -> None:
    """That ``folder`` exists or can be created, and that files can be written in it: a
    temporary file is made (and removed) in its nearest existing ancestor; nothing is created
    before the command's work itself writes."""
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            break
    if not ancestor.is_dir():
        raise ValueError(f"cannot write under {folder}: {ancestor} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        raise ValueError(f"cannot write in {ancestor}: {error.strerror or error}") from None


def output_dir(path: str | os.PathLike) -> Path:
    """``path`` as a folder a command may write its files into (created when it writes)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file; the output here is a folder")
    _check_folder(path)
    return path


def output_file(path: str | os.PathLike) -> Path:
    """``path`` as a file a command may write: an existing file it may write over (even in a
    folder it cannot write in, such as ``/dev/null``), or a new file in a writable folder."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; the output here is a file (give its name)")
    if path.exists() and os.access(path, os.W_OK):
        return path
    _check_folder(path.parent)
    return path
