"""diffmine: libdiffmine on numpy arrays, through the library's C API with ctypes: Stable Diffusion
primitives (tokenize, text embeddings, VAE encode/decode, UNet noise prediction), typicality maps
(:meth:`Model.typicality`), typical patches (:func:`select_patches`) and finetuning (:func:`finetune`).

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
from .mining import Box, select_patches
from .model import Model, ModelInfo, version

__all__ = ["Box", "Error", "Model", "ModelInfo", "Status", "finetune", "library_path", "select_patches", "version"]
__version__ = "0.1.0"
