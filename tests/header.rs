//! The checked-in C header is what cbindgen makes of the current source, declares only dm_/DM_ names,
//! and its version macros agree with Cargo.toml and with dm_version().
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

/// Every name the header declares: macros, struct and enum tags, typedef names, enum constants and
/// functions (the include guard aside).
fn declared_names(header: &str) -> Vec<String> {
    let code = regex::Regex::new(r"//[^\n]*|/\*(?s:.*?)\*/").unwrap().replace_all(header, "");
    let patterns = [
        r"(?m)^#define\s+(\w+)",
        r"\b(?:struct|enum|union)\s+(\w+)",
        r"\(\*\s*(\w+)\)",
        r"\}\s*(\w+)\s*;",
        r"(?m)^typedef\s+(?:struct|enum|union)\s+\w+\s+(\w+)\s*;",
        r"(?m)^[a-z][^(;#\n]*?\b(\w+)\(",
    ];
    let mut names: Vec<String> =
        patterns.iter().flat_map(|p| regex::Regex::new(p).unwrap().captures_iter(&code).map(|c| c[1].to_string()).collect::<Vec<_>>()).collect();
    let enum_body = regex::Regex::new(r"enum\s+\w*\s*\{([^}]*)\}").unwrap();
    for body in enum_body.captures_iter(&code) {
        names.extend(body[1].split(',').filter_map(|item| item.split('=').next()).map(str::trim).filter(|n| !n.is_empty()).map(str::to_string));
    }
    names.retain(|n| n != "DIFFMINE_H" && n != "__cplusplus");
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_name_the_header_declares_starts_with_dm() {
    let header = std::fs::read_to_string(root().join("include/diffmine.h")).unwrap();
    let names = declared_names(&header);
    for expected in ["DM_OK", "dm_status", "dm_model_open", "dm_progress_fn", "dm_image_view", "DM_VERSION_MAJOR"] {
        assert!(names.iter().any(|n| n == expected), "the scan misses {expected}");
    }
    let foreign: Vec<&String> = names.iter().filter(|n| !n.starts_with("dm_") && !n.starts_with("DM_")).collect();
    assert!(foreign.is_empty(), "include/diffmine.h declares names without the dm_/DM_ prefix: {foreign:?}");
}
