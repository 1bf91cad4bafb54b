"""Python progress callbacks as ``dm_progress_fn``: the ctypes trampoline and its error handling.

A Python exception must never unwind through the library's frames (ctypes would print and swallow it,
and the library would carry on as if the callback had returned 0). The trampoline therefore catches
everything the callback raises, including KeyboardInterrupt, asks the library to cancel, and the
caller re-raises the exception once the C call has returned.
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable, Optional

from . import _lib
from ._lib import check

__all__ = ["Progress"]

_CONTINUE, _CANCEL = 0, 1


class Progress:
    """One C call's progress callback. ``callback`` (may be None) is called with ``(done, total)``, or
    ``(done, total, value)`` when ``with_value``; returning ``None`` or a true value continues, a false
    value (``False``, ``0``) cancels.

    Use: pass :attr:`function` and None as the C call's progress and user data, keep this object
    alive during the call, then ``progress.finish(status)`` instead of ``check(status)``.
    """

    def __init__(self, callback: Optional[Callable[..., Any]], with_value: bool = False) -> None:
        if callback is not None and not callable(callback):
            raise TypeError(f"progress must be callable, got {type(callback).__name__}")
        self._callback = callback
        self._with_value = with_value
        self._error: Optional[BaseException] = None
        # A NULL dm_progress_fn when there is no callback: the library then skips the calls.
        self.function = _lib.PROGRESS_FN(self._trampoline) if callback is not None else ctypes.cast(None, _lib.PROGRESS_FN)

    def _trampoline(self, done: int, total: int, value: float, _user_data: Optional[int]) -> int:
        if self._error is not None:  # the library should have stopped; never call the user again
            return _CANCEL
        try:
            assert self._callback is not None
            result = self._callback(done, total, value) if self._with_value else self._callback(done, total)
            return _CONTINUE if result is None or bool(result) else _CANCEL
        except BaseException as error:  # noqa: B902 - KeyboardInterrupt and SystemExit must not reach C either
            self._error = error
            return _CANCEL

    def finish(self, status: int) -> None:
        """Re-raises what the callback raised, if anything (the library then failed with
        DM_ERR_CANCELLED); else raises :class:`diffmine.Error` unless ``status`` is DM_OK (a
        cancellation by return value is DM_ERR_CANCELLED)."""
        error, self._error = self._error, None
        if error is not None:
            raise error  # with the traceback of where the callback raised it
        check(status)
