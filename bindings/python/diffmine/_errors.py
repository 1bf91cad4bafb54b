"""The library's status codes and the exceptions they raise.

Every failure is a :class:`Error` carrying the ``dm_status``; its subclass names the family of the status
and also derives from the built-in exception a Python caller would catch for it (a bad argument is a
``ValueError``, a missing file an ``OSError``, an allocation failure a ``MemoryError``), so both
``except diffmine.InvalidArgument`` and ``except ValueError`` work.
"""

from __future__ import annotations

import enum
from typing import Dict, Tuple, Type

__all__ = [
    "Status", "Error", "InvalidArgument", "InvalidHandle", "BufferTooSmall", "FileError", "ModelError",
    "Unsupported", "DeviceError", "OutOfMemory", "Cancelled", "TorchError", "InternalError", "InvalidData",
    "error_for",
]


class Status(enum.IntEnum):
    """``dm_status``: the result of every C call (the numbers are part of the ABI)."""

    OK = 0
    ERR_NULL_ARGUMENT = 1
    ERR_INVALID_HANDLE = 2
    ERR_INVALID_ARGUMENT = 3
    ERR_BUFFER_TOO_SMALL = 4
    ERR_IO = 5
    ERR_INVALID_MODEL = 6
    ERR_CORRUPT_WEIGHTS = 7
    ERR_MISSING_TENSOR = 8
    ERR_SHAPE_MISMATCH = 9
    ERR_UNSUPPORTED = 10
    ERR_DEVICE = 11
    ERR_OUT_OF_MEMORY = 12
    ERR_CANCELLED = 13
    ERR_TORCH = 14
    ERR_INTERNAL = 15
    ERR_INVALID_DATA = 16


class Error(Exception):
    """A failed libdiffmine call: ``status`` is the ``dm_status`` (an int), ``message`` the library's
    explanation (``dm_last_error()``). Raised as the subclass of the status's family."""

    statuses: Tuple[Status, ...] = ()

    def __init__(self, status: int, message: str) -> None:
        try:
            name = "DM_" + Status(status).name
        except ValueError:
            name = f"status {status}"
        # One argument, also for the OSError subclass (two would read as errno and strerror).
        super().__init__(f"{message} [{name}]")
        self.status = int(status)
        self.message = message

    def __reduce__(self):  # type: ignore[no-untyped-def]  (pickles as the constructor's arguments)
        return type(self), (self.status, self.message)


class InvalidArgument(Error, ValueError):
    """An argument out of range, inconsistent with another, or missing (DM_ERR_INVALID_ARGUMENT,
    DM_ERR_NULL_ARGUMENT)."""

    statuses = (Status.ERR_INVALID_ARGUMENT, Status.ERR_NULL_ARGUMENT)


class InvalidHandle(Error, ValueError):
    """A closed or foreign object (DM_ERR_INVALID_HANDLE); a ``ValueError`` as for a closed file."""

    statuses = (Status.ERR_INVALID_HANDLE,)


class BufferTooSmall(Error, BufferError):
    """An output buffer smaller than the result (DM_ERR_BUFFER_TOO_SMALL)."""

    statuses = (Status.ERR_BUFFER_TOO_SMALL,)


class FileError(Error, OSError):
    """A file or folder missing or unreadable (DM_ERR_IO)."""

    statuses = (Status.ERR_IO,)


class ModelError(Error):
    """A model folder the library cannot use: not a diffusers layout, corrupt weights, a missing tensor
    or one of the wrong shape (DM_ERR_INVALID_MODEL, DM_ERR_CORRUPT_WEIGHTS, DM_ERR_MISSING_TENSOR,
    DM_ERR_SHAPE_MISMATCH)."""

    statuses = (Status.ERR_INVALID_MODEL, Status.ERR_CORRUPT_WEIGHTS, Status.ERR_MISSING_TENSOR,
                Status.ERR_SHAPE_MISMATCH)


class Unsupported(Error, NotImplementedError):
    """A format, architecture or option the library does not implement (DM_ERR_UNSUPPORTED)."""

    statuses = (Status.ERR_UNSUPPORTED,)


class DeviceError(Error, RuntimeError):
    """An unknown device or one this machine does not have (DM_ERR_DEVICE)."""

    statuses = (Status.ERR_DEVICE,)


class OutOfMemory(Error, MemoryError):
    """CPU or GPU memory could not be allocated (DM_ERR_OUT_OF_MEMORY)."""

    statuses = (Status.ERR_OUT_OF_MEMORY,)


class Cancelled(Error):
    """The progress callback cancelled the work (DM_ERR_CANCELLED); the object stays usable."""

    statuses = (Status.ERR_CANCELLED,)


class TorchError(Error, RuntimeError):
    """libtorch failed for another reason (DM_ERR_TORCH)."""

    statuses = (Status.ERR_TORCH,)


class InternalError(Error, RuntimeError):
    """A bug in libdiffmine, caught before it reached Python (DM_ERR_INTERNAL)."""

    statuses = (Status.ERR_INTERNAL,)


class InvalidData(Error, ValueError):
    """A malformed input file: truncated or corrupt DICOM, a CSV without a required column, a box outside
    its image (DM_ERR_INVALID_DATA)."""

    statuses = (Status.ERR_INVALID_DATA,)


_CLASS_OF: Dict[int, Type[Error]] = {
    int(status): family
    for family in (InvalidArgument, InvalidHandle, BufferTooSmall, FileError, ModelError, Unsupported, DeviceError,
                   OutOfMemory, Cancelled, TorchError, InternalError, InvalidData)
    for status in family.statuses
}


def error_for(status: int, message: str) -> Error:
    """The exception for ``status``: its family's class, or :class:`Error` for a code this binding does
    not know (a newer library)."""
    return _CLASS_OF.get(int(status), Error)(status, message)
