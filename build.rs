//! Gives libdiffmine.so (and the test and example binaries) an rpath to libtorch's lib folder, so a C
//! program links `-ldiffmine` and runs without LD_LIBRARY_PATH, and keeps libtorch_cuda as a needed
//! library: nothing in our code names a CUDA symbol, so `--as-needed` would drop it and CUDA would be
//! reported unavailable even on a GPU machine (tch's own `-ltorch_cuda` does not reach dependent crates).
//!
//! Also names the shared library by its ABI version (see `soname`), so that programs linked against one
//! release refuse to load an incompatible one, and exports only the C API.
use std::path::PathBuf;

fn main() {
    let soname = soname();
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    // rustc exports every `#[no_mangle]` function of every crate it links (OpenJPEG's `opj_*` from the
    // openjp2 port, tch's `tch_*` stream helpers): they would interpose on a host's own libopenjp2.
    // The dependencies arrive as archives, our crate's code as objects, so this keeps exactly `dm_*`.
    println!("cargo:rustc-cdylib-link-arg=-Wl,--exclude-libs,ALL");
    link_soname_to_library(&soname);
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB is not set: no rpath to libtorch");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if PathBuf::from(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,-ltorch_cuda,--pop-state");
    }
}

/// Programs linked with `-ldiffmine` ask the loader for the soname, so the build folder needs it too
/// (scripts/install.sh makes the same link under the prefix): `target/<profile>/<soname>` pointing at
/// `libdiffmine.so`, which cargo links next to it after this script runs.
fn link_soname_to_library(soname: &str) {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is target/<profile>/build/diffmine-<hash>/out.
    let Some(profile_dir) = out_dir.ancestors().nth(3) else { return };
    let link = profile_dir.join(soname);
    if std::fs::read_link(&link).is_err() {
        if let Err(e) = std::os::unix::fs::symlink("libdiffmine.so", &link) {
            println!("cargo:warning=cannot link {} to libdiffmine.so: {e}", link.display());
        }
    }
}

/// `libdiffmine.so.MAJOR`, or `libdiffmine.so.0.MINOR` before 1.0, where a minor release may break the
/// ABI (scripts/install.sh makes the same name from the same Cargo.toml version).
fn soname() -> String {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    let minor = std::env::var("CARGO_PKG_VERSION_MINOR").expect("cargo sets CARGO_PKG_VERSION_MINOR");
    if major == "0" {
        format!("libdiffmine.so.0.{minor}")
    } else {
        format!("libdiffmine.so.{major}")
    }
}
