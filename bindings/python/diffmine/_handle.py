"""The lifetime shared by the binding's objects that own a libdiffmine handle (models, miners)."""

from __future__ import annotations

from typing import Optional

from . import _lib
from ._errors import InvalidHandle, Status
from ._lib import check


class Handle:
    """Owns one C handle, released by ``_free`` (the name of its ``dm_*_free``). ``close()`` is
    idempotent; a closed object's handle is never passed on, since its address may already belong
    to a new object. Usable as a context manager."""

    _free: str = ""
    _kind: str = "object"

    def __init__(self) -> None:
        self._handle: Optional[int] = None

    def close(self) -> None:
        """Releases the handle; later calls raise :class:`diffmine.InvalidHandle` (DM_ERR_INVALID_HANDLE). Idempotent."""
        handle, self._handle = self._handle, None
        if handle is not None:
            check(getattr(_lib.lib(), self._free)(handle))

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self):  # type: ignore[no-untyped-def]  (the subclass's type)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown, or the library already gone
            pass

    def _h(self) -> int:
        if self._handle is None:
            raise InvalidHandle(Status.ERR_INVALID_HANDLE, f"the {self._kind} is closed")
        return self._handle
