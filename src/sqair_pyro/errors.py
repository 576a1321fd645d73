"""Errors said in one line: what the command line prints for anything that goes wrong."""

from __future__ import annotations

__all__ = ["command_errors", "one_line"]


def one_line(error: BaseException, with_type: bool = False) -> str:
    """``error`` as one line: an OS error as its file and the system's words (no errno), an
    empty ``MemoryError`` as "out of memory", anything else as the first line of its message
    (prefixed by its type with ``with_type``, for errors raised by other people's code)."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    text = str(error).strip().split("\n")[0]
    if isinstance(error, MemoryError):
        return f"out of memory ({text})" if text else "out of memory"
    if not text:
        return type(error).__name__
    return f"{type(error).__name__}: {text}" if with_type else text


def command_errors() -> tuple[type[BaseException], ...]:
    """What a command (``sqair-pyro`` or a benchmark script) reports as one line and exit
    status 1: a file it cannot use, a value out of range, memory, a damaged checkpoint."""
    from sqair_pyro.checkpoint import CheckpointError  # torch: only once something failed

    return (OSError, ValueError, MemoryError, CheckpointError)
