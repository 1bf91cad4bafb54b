"""The wheel's version, dependencies and platform tag, from the staged copy that scripts/build_wheel.sh
prepares (a plain ``pip install bindings/python`` would give a package without its library, so it
is refused with a pointer to the script)."""

import runpy
import sysconfig
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel

PACKAGE = Path(__file__).resolve().parent / "diffmine"


def build_info() -> dict:
    """``diffmine/_build.py``: VERSION (Cargo.toml's) and TORCH_VERSION (the libtorch the bundled
    library links)."""
    if not (PACKAGE / "_build.py").is_file() or not (PACKAGE / "libdiffmine.so").is_file():
        raise SystemExit("the diffmine wheel carries libdiffmine.so: build it with `bash scripts/build_wheel.sh` "
                         "from the repository root, not from bindings/python directly")
    return runpy.run_path(str(PACKAGE / "_build.py"))


class PlatformDistribution(Distribution):
    """A platform package (installed to platlib, Root-Is-Purelib: false): it holds a shared library,
    although no Python extension module."""

    def has_ext_modules(self) -> bool:
        return True


class PlatformWheel(bdist_wheel):
    """Tags the wheel ``py3-none-<platform>``: any Python 3 (the binding is ctypes, with no Python ABI
    dependency), but only the platform the library was compiled for."""

    def get_tag(self) -> tuple:
        return "py3", "none", sysconfig.get_platform().replace("-", "_").replace(".", "_")


info = build_info()
setup(
    version=info["VERSION"],
    install_requires=["numpy", f"torch=={info['TORCH_VERSION']}"],
    distclass=PlatformDistribution,
    cmdclass={"bdist_wheel": PlatformWheel},
)
