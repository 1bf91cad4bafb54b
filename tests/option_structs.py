"""Prints the layout of every ctypes Structure of the Python binding (diffmine/_lib.py), the defaults
the library fills into the options structs, read through those declarations, and every function
prototype, in the format that tests/option_structs.rs derives from include/diffmine.h (through a C
program for the layouts and defaults); the test compares the two.

Run with PYTHONPATH=bindings/python and DIFFMINE_LIB set to the library.
"""

import ctypes
import re

from diffmine import _lib


def c_name(python_name: str) -> str:
    """``CModelOptions`` -> ``dm_model_options`` (the binding names each struct after the header's)."""
    return "dm_" + re.sub(r"(?<!^)(?=[A-Z])", "_", python_name[1:]).lower()


_INTEGER_KINDS = {"B": "u", "H": "u", "I": "u", "L": "u", "Q": "u", "b": "i", "h": "i", "i": "i", "l": "i", "q": "i"}


def canonical(ctype: object) -> str:
    """A ctypes type as tests/option_structs.rs writes a C type: ``u64``, ``i32``, ``f64``, ``char*``,
    ``dm_model_options*``, ``void*`` (also every handle), ``dm_progress_fn``."""
    if ctype is None:
        return "void"
    callbacks = {_lib.PROGRESS_FN: "dm_progress_fn", _lib.LOG_FN: "dm_log_fn"}
    if ctype in callbacks:
        return callbacks[ctype]
    if ctype is ctypes.c_char_p:
        return "char*"
    if ctype is ctypes.c_void_p:
        return "void*"
    if issubclass(ctype, ctypes._Pointer):
        return canonical(ctype._type_) + "*"
    if issubclass(ctype, ctypes.Structure):
        return c_name(ctype.__name__)
    code = ctype._type_
    kind = _INTEGER_KINDS.get(code) or {"f": "f", "d": "f"}[code]
    return f"{kind}{8 * ctypes.sizeof(ctype)}"


def value(field_value: object, field_type: type) -> str:
    """One field as the C program prints it."""
    if field_type is ctypes.c_char_p:
        return "NULL" if field_value is None else '"' + field_value.decode("utf-8", errors="replace") + '"'
    if isinstance(field_type, type) and issubclass(field_type, (ctypes._Pointer, ctypes.c_void_p)):
        return "non-NULL" if field_value else "NULL"
    if isinstance(field_value, float):
        return "%.17g" % field_value
    return str(int(field_value))


def main() -> None:
    library = _lib.lib()
    structs = [v for v in vars(_lib).values() if isinstance(v, type) and issubclass(v, ctypes.Structure) and v.__name__.startswith("C")]
    for struct in structs:
        name = c_name(struct.__name__)
        print(f"layout {name} {ctypes.sizeof(struct)}")
        for field, field_type in struct._fields_:
            descriptor = getattr(struct, field)
            print(f"field {name}.{field} {descriptor.offset} {descriptor.size}")
        default = getattr(library, f"{name}_default", None)
        if default is None:
            continue
        options = struct()
        ctypes.memset(ctypes.byref(options), 0xAB, ctypes.sizeof(options))
        status = default(ctypes.byref(options))
        if status != 0:
            raise SystemExit(f"{name}_default failed with status {status}")
        for field, field_type in struct._fields_:
            print(f"default {name}.{field} {value(getattr(options, field), field_type)}")
    for name, (restype, argtypes) in _lib._PROTOTYPES.items():
        print(f"proto {name} {canonical(restype)}({', '.join(canonical(a) for a in argtypes)})")


if __name__ == "__main__":
    main()
