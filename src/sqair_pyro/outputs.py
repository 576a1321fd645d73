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


def _ensure_folder(folder: Path) -> None:
    """Create ``folder`` (with its parents) and check that files can be written in it."""
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"cannot write under {folder}: {parent} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"cannot write in {folder}: {error.strerror or error}") from None


def output_dir(path: str | os.PathLike) -> Path:
    """``path`` as a folder a command may write its files into (created if need be)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file; the output here is a folder")
    _ensure_folder(path)
    return path


def output_file(path: str | os.PathLike) -> Path:
    """``path`` as a file a command may write (its folder created if need be)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; the output here is a file (give its name)")
    _ensure_folder(path.parent)
    return path
