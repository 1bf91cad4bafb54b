//! The checked-in C header is what cbindgen makes of the current source, and its version macros agree
//! with Cargo.toml and with dm_version().
use std::ffi::CStr;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn checked_in_header_equals_cbindgen_output() {
    let generated = std::env::temp_dir().join(format!("diffmine-header-{}.h", std::process::id()));
    let status = Command::new("cbindgen")
        .current_dir(root())
        .args(["--quiet", "--config", "cbindgen.toml", "--crate", "diffmine", "--output"])
        .arg(&generated)
        .status()
        .expect("run cbindgen (scripts/setup.sh installs it)");
    assert!(status.success(), "cbindgen failed");
    let fresh = std::fs::read_to_string(&generated).unwrap();
    let checked_in = std::fs::read_to_string(root().join("include/diffmine.h")).unwrap();
    let _ = std::fs::remove_file(&generated);
    assert!(fresh == checked_in, "include/diffmine.h is stale: run `cbindgen --config cbindgen.toml --crate diffmine --output include/diffmine.h`");
}

fn header_macro(header: &str, name: &str) -> u32 {
    let line = header.lines().find(|l| l.starts_with(&format!("#define {name} "))).unwrap_or_else(|| panic!("{name} missing"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn header_version_macros_match_cargo_toml_and_dm_version() {
    let header = std::fs::read_to_string(root().join("include/diffmine.h")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let macros = ["DM_VERSION_MAJOR", "DM_VERSION_MINOR", "DM_VERSION_PATCH"].map(|m| header_macro(&header, m).to_string());
    assert_eq!(macros.join("."), version);
    // SAFETY: dm_version returns a static NUL-terminated string.
    let runtime = unsafe { CStr::from_ptr(diffmine::ffi::dm_version()) }.to_str().unwrap();
    assert_eq!(runtime, version);
}
