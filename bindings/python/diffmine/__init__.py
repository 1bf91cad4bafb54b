"""diffmine: libdiffmine on numpy arrays, through the library's C API with ctypes: Stable Diffusion
primitives (tokenize, text embeddings, VAE encode/decode, UNet noise prediction), typicality maps
(:meth:`Model.typicality`), typical patches (:func:`select_patches`), finetuning (:func:`finetune`) and
the medical side: DICOM/PNG/JPEG ingestion (:func:`read_image`), maps back as DICOM
(:func:`write_map_dicom`), ChestX-ray8's AUC-PR and evaluation (:func:`auc_pr`, :func:`cxr8_evaluate`),
mining typical visual elements of a labelled set (:class:`Miner`) and co-typical elements across labels
(:class:`ParallelMiner`), the mining stages one by one for running them apart (:mod:`diffmine.stages`), and Plug-and-Play translation between labels and text-to-image sampling (:meth:`Model.translate`,
:meth:`Model.generate`).

The shared library is the one inside this package (a wheel's, which finds libtorch in the torch
package installed beside it), unless ``$DIFFMINE_LIB`` names another; without either, the dynamic
linker's search path. Failures raise subclasses of :class:`Error` that also derive from the matching
built-in exception (:class:`InvalidArgument` is a ``ValueError``, :class:`FileError` an ``OSError``...).
The library's log goes to the "diffmine" logger (:func:`set_log_level`).

>>> import diffmine
>>> with diffmine.Model("path/to/stable-diffusion-v1-5") as model:
...     embeddings = model.text_embeddings("Chest X-Ray with Effusion.")  # (77, 768) float32
...     typicality = model.typicality(image, "Chest X-Ray with Effusion.")   # H×W float32
...     boxes = diffmine.select_patches(typicality, patch=64, max_boxes=5)  # [(x, y, size, score)]
"""

from ._lib import check_torch

check_torch()  # before anything loads the library: an ImportError naming the torch it needs

from ._errors import (  # noqa: E402
    BufferTooSmall, Cancelled, DeviceError, Error, FileError, InternalError, InvalidArgument, InvalidData,
    InvalidHandle, ModelError, OutOfMemory, Status, TorchError, Unsupported,
)
from ._lib import library_path, set_log_level  # noqa: E402
from .training import finetune  # noqa: E402
from .medical import Image, auc_pr, cxr8_evaluate, new_uid, read_image, write_map_dicom  # noqa: E402
from .miner import Miner  # noqa: E402
from .mining import Box, select_patches  # noqa: E402
from .model import Model, ModelInfo, version  # noqa: E402
from .parallel_miner import ParallelMiner  # noqa: E402
from . import stages  # noqa: E402

__all__ = [
    "Box", "BufferTooSmall", "Cancelled", "DeviceError", "Error", "FileError", "Image", "InternalError",
    "InvalidArgument", "InvalidData", "InvalidHandle", "Miner", "Model", "ModelError", "ModelInfo", "OutOfMemory",
    "ParallelMiner", "Status", "TorchError", "Unsupported", "auc_pr", "cxr8_evaluate", "finetune", "library_path",
    "new_uid", "read_image", "select_patches", "set_log_level", "stages", "version", "write_map_dicom",
]


def __getattr__(name: str) -> str:
    """``__version__``: the loaded library's ``dm_version()``, which is Cargo.toml's version, as is a
    wheel's (one source for the C and the Python version)."""
    if name == "__version__":
        return version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
