"""Prints the layout of every ctypes Structure of the Python binding (diffmine/_lib.py) and the defaults
the library fills into the options structs, read through those declarations, in the format of the C
program tests/option_structs.rs generates from include/diffmine.h; the test compares the two.

Run with PYTHONPATH=bindings/python and DIFFMINE_LIB set to the library.
"""

import ctypes
import re

from diffmine import _lib


def c_name(python_name: str) -> str:
    """``CModelOptions`` -> ``dm_model_options`` (the binding names each struct after the header's)."""
    return "dm_" + re.sub(r"(?<!^)(?=[A-Z])", "_", python_name[1:]).lower()


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


if __name__ == "__main__":
    main()
