"""diffmine: Stable Diffusion primitives of libdiffmine (tokenize, text embeddings, VAE encode/decode,
UNet noise prediction) on numpy arrays, through the library's C API with ctypes.

The shared library is found through ``$DIFFMINE_LIB``, else the repository's
``target/release/libdiffmine.so``, else the dynamic linker's search path.

>>> import diffmine
>>> with diffmine.Model("path/to/stable-diffusion-v1-5") as model:
...     embeddings = model.text_embeddings("Chest X-Ray with Effusion.")  # (77, 768) float32
"""

from ._lib import Error, Status, library_path
from .model import Model, ModelInfo, version

__all__ = ["Error", "Model", "ModelInfo", "Status", "library_path", "version"]
__version__ = "0.1.0"
