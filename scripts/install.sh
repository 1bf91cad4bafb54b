#!/usr/bin/env bash
# Installs libdiffmine under a prefix, as C and C++ programs expect to find a library:
#   PREFIX/lib/libdiffmine.so.X.Y.Z (stripped; --debug keeps the line tables), its soname link and
#   the libdiffmine.so development link; PREFIX/include/diffmine.h and diffmine.hpp;
#   PREFIX/lib/pkgconfig/diffmine.pc; PREFIX/lib/cmake/diffmine/ (imported target diffmine::diffmine);
#   PREFIX/bin/diffmine.
# libtorch is not copied: the library and the CLI load it from the torch install named by --torch,
# through a RUNPATH to its lib folder. That torch must be 2.11.0 (the version the library is built
# for) and must not live inside this checkout, which the installed files must not depend on.
#
# Everything is checked and staged in a temporary folder under the prefix first, then moved into
# place, so a bad argument or a failed step leaves nothing half-installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd -P)

usage() {
    cat >&2 <<EOF
usage: bash scripts/install.sh --prefix DIR --torch DIR [--from DIR] [--debug]
  --prefix DIR  where to install (lib/, include/, bin/ under it); created if missing
  --torch DIR   the torch 2.11.0 install to load libtorch from: a PyPI torch package folder
                (.../site-packages/torch) or an unpacked libtorch archive; outside this checkout
  --from DIR    take libdiffmine.so and the diffmine CLI from this build folder instead of
                running 'cargo build --release'
  --debug       keep the line tables (a library of about 105 MB instead of 10 MB)
EOF
}

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

prefix=""
torch=""
from=""
debug=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix | --torch | --from)
            [ $# -ge 2 ] || { usage; fail "$1 needs a value"; }
            declare "${1#--}=$2"
            shift 2
            ;;
        --debug) debug=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage; fail "unknown argument '$1'" ;;
    esac
done
[ -n "$prefix" ] || { usage; fail "--prefix is required"; }
[ -n "$torch" ] || { usage; fail "--torch is required (libtorch is not bundled: name the torch 2.11.0 install to load it from)"; }

for tool in patchelf readelf strip; do
    command -v "$tool" >/dev/null 2>&1 || fail "'$tool' is not installed (scripts/setup.sh installs it)"
done

# Cargo.toml's [package] version is the only place the version is written.
version=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\([0-9]*\.[0-9]*\.[0-9]*\)".*/\1/p' "$root/Cargo.toml" | head -1)
[[ $version =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] || fail "cannot read the version from $root/Cargo.toml"
major=${BASH_REMATCH[1]}
minor=${BASH_REMATCH[2]}
# Before 1.0 a minor release may break the ABI, so the soname carries the minor (as build.rs sets it).
if [ "$major" = 0 ]; then soname="libdiffmine.so.0.$minor"; else soname="libdiffmine.so.$major"; fi
real_name="libdiffmine.so.$version"

inside_checkout() {
    case "$1/" in "$root"/*) return 0 ;; *) return 1 ;; esac
}

# --- torch ---------------------------------------------------------------------------------------
[ -d "$torch" ] || fail "--torch $torch is not a folder"
torch=$(cd "$torch" && pwd -P)
inside_checkout "$torch" && fail "--torch $torch is inside this checkout ($root): the installed library must not depend on the checkout; name a torch installed elsewhere"
[ -f "$torch/lib/libtorch_cpu.so" ] || fail "--torch $torch has no lib/libtorch_cpu.so: not a torch install"
if [ -f "$torch/version.py" ]; then
    torch_version=$(sed -n "s/^__version__ *= *['\"]\([^'\"]*\)['\"].*/\1/p" "$torch/version.py" | head -1)
elif [ -f "$torch/build-version" ]; then
    torch_version=$(head -1 "$torch/build-version")
else
    fail "--torch $torch has neither version.py nor build-version: cannot tell its version"
fi
case "$torch_version" in
    2.11.0 | 2.11.0+*) ;;
    *) fail "--torch $torch is torch ${torch_version:-of unknown version}; libdiffmine $version needs torch 2.11.0" ;;
esac
torch_lib="$torch/lib"

# --- prefix --------------------------------------------------------------------------------------
mkdir -p "$prefix" 2>/dev/null || fail "cannot create --prefix $prefix"
prefix=$(cd "$prefix" && pwd -P)
stage=$(mktemp -d "$prefix/.diffmine-install.XXXXXX" 2>/dev/null) || fail "--prefix $prefix is not writable"
trap 'rm -rf "$stage"' EXIT
for sub in lib include bin; do
    if [ -e "$prefix/$sub" ] && ! [ -w "$prefix/$sub" ]; then
        fail "$prefix/$sub is not writable"
    fi
done

# --- build ---------------------------------------------------------------------------------------
if [ -z "$from" ]; then
    (
        cd "$root"
        [ -n "${LIBTORCH:-}" ] || source scripts/env.sh
        cargo build --release --quiet
    ) || fail "cargo build --release failed"
    from="${CARGO_TARGET_DIR:-$root/target}/release"
fi
library="$from/libdiffmine.so"
cli="$from/diffmine"
[ -f "$library" ] || fail "$library is missing (build with 'cargo build --release')"
[ -f "$cli" ] || fail "$cli is missing (build with 'cargo build --release')"
built_soname=$(readelf -d "$library" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$built_soname" = "$soname" ] || fail "$library has soname '${built_soname}', expected '$soname': rebuild it"

# --- stage ---------------------------------------------------------------------------------------
mkdir -p "$stage/lib/pkgconfig" "$stage/lib/cmake/diffmine" "$stage/include" "$stage/bin"
install_binary() {
    cp "$1" "$2"
    if [ "$debug" = 0 ]; then
        strip --strip-debug "$2"
    fi
    patchelf --set-rpath "$torch_lib" "$2"
}
install_binary "$library" "$stage/lib/$real_name"
ln -s "$real_name" "$stage/lib/$soname"
ln -s "$soname" "$stage/lib/libdiffmine.so"
install_binary "$cli" "$stage/bin/diffmine"
cp "$root/include/diffmine.h" "$root/include/diffmine.hpp" "$stage/include/"

cat > "$stage/lib/pkgconfig/diffmine.pc" <<EOF
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: diffmine
Description: Diffusion models as data mining tools (typicality, mining, translation), C API
Version: $version
Libs: -L\${libdir} -ldiffmine
Cflags: -I\${includedir}
EOF

cat > "$stage/lib/cmake/diffmine/diffmineConfig.cmake" <<EOF
# diffmine $version: the imported target diffmine::diffmine (libdiffmine.so and its headers;
# diffmine.hpp needs C++17).
get_filename_component(_diffmine_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET diffmine::diffmine)
  add_library(diffmine::diffmine SHARED IMPORTED)
  set_target_properties(diffmine::diffmine PROPERTIES
    IMPORTED_LOCATION "\${_diffmine_prefix}/lib/$real_name"
    IMPORTED_SONAME "$soname"
    INTERFACE_INCLUDE_DIRECTORIES "\${_diffmine_prefix}/include")
endif()
unset(_diffmine_prefix)
EOF

# Compatible: the same soname (same major, and before 1.0 the same minor) and at least the version
# asked for.
cat > "$stage/lib/cmake/diffmine/diffmineConfigVersion.cmake" <<EOF
set(PACKAGE_VERSION "$version")
set(PACKAGE_VERSION_COMPATIBLE FALSE)
set(PACKAGE_VERSION_EXACT FALSE)
if(NOT CMAKE_SIZEOF_VOID_P STREQUAL "8")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
elseif(PACKAGE_FIND_VERSION_MAJOR EQUAL $major
       AND (NOT $major EQUAL 0 OR PACKAGE_FIND_VERSION_MINOR EQUAL $minor)
       AND NOT PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
EOF

for file in "$stage/lib/$real_name" "$stage/bin/diffmine"; do
    runpath=$(readelf -d "$file" | sed -n 's/.*R\(UN\)\{0,1\}PATH.*\[\(.*\)\]/\2/p')
    [ "$runpath" = "$torch_lib" ] || fail "$(basename "$file") has RUNPATH '$runpath', expected '$torch_lib'"
done

# --- move into place -----------------------------------------------------------------------------
# Renames within one file system: after the checks above these do not fail half-way.
mkdir -p "$prefix/lib/pkgconfig" "$prefix/lib/cmake/diffmine" "$prefix/include" "$prefix/bin"
for file in lib/"$real_name" lib/"$soname" lib/libdiffmine.so lib/pkgconfig/diffmine.pc \
    lib/cmake/diffmine/diffmineConfig.cmake lib/cmake/diffmine/diffmineConfigVersion.cmake \
    include/diffmine.h include/diffmine.hpp bin/diffmine; do
    mv -f -T "$stage/$file" "$prefix/$file"
done
echo "installed libdiffmine $version into $prefix (libtorch from $torch_lib)"
