//! Gives libdiffmine.so (and the test and example binaries) an rpath to libtorch's lib folder, so a C
//! program links `-ldiffmine` and runs without LD_LIBRARY_PATH, and keeps libtorch_cuda as a needed
//! library: nothing in our code names a CUDA symbol, so `--as-needed` would drop it and CUDA would be
//! reported unavailable even on a GPU machine (tch's own `-ltorch_cuda` does not reach dependent crates).
use std::path::PathBuf;

fn main() {
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
