"""diffmine: libdiffmine on numpy arrays, through the library's C API with ctypes: Stable Diffusion
primitives (tokenize, text embeddings, VAE encode/decode, UNet noise prediction), typicality maps
(:meth:`Model.typicality`), typical patches (:func:`select_patches`), finetuning (:func:`finetune`) and
the medical side: DICOM/PNG/JPEG ingestion (:func:`read_image`), maps back as DICOM
(:func:`write_map_dicom`), ChestX-ray8's AUC-PR and evaluation (:func:`auc_pr`, :func:`cxr8_evaluate`),
mining typical visual elements of a labelled set (:class:`Miner`) and co-typical elements across labels
(:class:`ParallelMiner`), and Plug-and-Play translation between labels and text-to-image sampling (:meth:`Model.translate`,
:meth:`Model.generate`).

The shared library is found through ``$DIFFMINE_LIB``, else the repository's
``target/release/libdiffmine.so``, else the dynamic linker's search path.

>>> import diffmine
>>> with diffmine.Model("path/to/stable-diffusion-v1-5") as model:
...     embeddings = model.text_embeddings("Chest X-Ray with Effusion.")  # (77, 768) float32
...     typicality = model.typicality(image, "Chest X-Ray with Effusion.")   # H×W float32
...     boxes = diffmine.select_patches(typicality, patch=64, max_boxes=5)  # [(x, y, size, score)]
"""

from ._lib import Error, Status, library_path
from .training import finetune
from .medical import Image, auc_pr, cxr8_evaluate, new_uid, read_image, write_map_dicom
from .miner import Miner
from .mining import Box, select_patches
from .model import Model, ModelInfo, version
from .parallel_miner import ParallelMiner

__all__ = [
    "Box", "Error", "Image", "Miner", "Model", "ModelInfo", "ParallelMiner", "Status", "auc_pr", "cxr8_evaluate", "finetune", "library_path", "new_uid",
    "read_image", "select_patches", "version", "write_map_dicom",
]
__version__ = "0.1.0"
