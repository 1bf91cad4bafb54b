#!/usr/bin/env bash
# Writes the ABI of libdiffmine (libabigail's XML, as `abidw` writes it) to OUT: the layout of every
# struct and enum in include/diffmine.h and the type of every exported function.
#
# The release library carries line tables only, so it has no type information. The types come from a
# small C library compiled with -g from the header: a function taking each struct, and for each
# function the library exports, a pointer variable of its type (`__typeof__`), so that a changed
# parameter, return type or field shows in the dump, and a removed function removes its variable.
#
#   bash scripts/abi_dump.sh [LIBRARY [OUT]]
#     LIBRARY  the built libdiffmine.so (default target/release/libdiffmine.so)
#     OUT      where to write (default tests/abi/diffmine.abi, the baseline tests/abi.rs compares with)
#
# Regenerate the baseline with no arguments after a release build, in the same commit as the ABI
# change; an incompatible change also bumps the minor version in Cargo.toml (and so the soname).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
library=${1:-$root/target/release/libdiffmine.so}
out=${2:-$root/tests/abi/diffmine.abi}
[ -f "$library" ] || { echo "abi_dump.sh: $library is missing (cargo build --release)" >&2; exit 1; }
command -v abidw >/dev/null 2>&1 || { echo "abi_dump.sh: abidw is not installed (Debian's abigail-tools; scripts/setup.sh installs it)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source="$work/diffmine_abi.c"
{
    echo '#include "diffmine.h"'
    echo 'enum dm_status dm_abi_status(enum dm_status status) { return status; }'
    sed -n 's/^typedef struct \(dm_[A-Za-z0-9_]*\) {$/\1/p' "$root/include/diffmine.h" | sort | while read -r name; do
        echo "void dm_abi_struct_$name(struct $name *value) { (void)value; }"
    done
    nm -D --defined-only "$library" | awk '$2 == "T" && $3 ~ /^dm_/ { print $3 }' | sort | while read -r name; do
        echo "__typeof__($name) *const dm_abi_function_$name = $name;"
    done
} > "$source"
# Undefined references to the library's functions are fine in a shared object; it is never loaded.
cc -std=gnu11 -g -O0 -fPIC -shared -Wall -Werror -I "$root/include" "$source" -o "$work/libdiffmine_abi.so"
abidw --no-corpus-path --no-comp-dir-path --no-show-locs --no-elf-needed --drop-undefined-syms \
    --type-id-style hash --out-file "$out" "$work/libdiffmine_abi.so"
