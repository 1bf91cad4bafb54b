//! The C ABI of this build against the checked-in baseline tests/abi/diffmine.abi (libabigail's XML,
//! written by scripts/abi_dump.sh from the header's types and the library's exported functions): a
//! removed function, a changed parameter or return type, or a changed struct or enum layout fails, as
//! `abidiff` reports it; added functions and structs pass, and so do fields appended to a struct whose
//! first field is `struct_size` (the library reads and writes such a struct only as far as the
//! caller's `struct_size` goes, which is how those structs grow compatibly). An intended change regenerates the
//! baseline (`bash scripts/abi_dump.sh` after `cargo build --release`) in the same commit, and an
//! incompatible one also bumps the minor version in Cargo.toml, which renames the soname.
//!
//! Also: the library exports the functions include/diffmine.h declares, and nothing else.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>/libdiffmine.so`, built with this test.
fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let lib = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/<test>").join("libdiffmine.so");
    assert!(lib.is_file(), "{} is missing", lib.display());
    lib
}

fn show(output: &Output) -> String {
    format!("status: {}\n{}{}", output.status, String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn abi_equals_the_baseline_apart_from_additions() {
    let dump = tempfile::NamedTempFile::new().expect("temp file");
    let output = Command::new("bash").arg(root().join("scripts/abi_dump.sh")).arg(library()).arg(dump.path()).output().expect("run scripts/abi_dump.sh");
    assert!(output.status.success(), "abi_dump.sh failed:\n{}", show(&output));
    let suppressions = tempfile::NamedTempFile::new().expect("temp file");
    let header = std::fs::read_to_string(root().join("include/diffmine.h")).expect("read include/diffmine.h");
    std::fs::write(suppressions.path(), appended_fields_allowed(&versioned_structs(&header))).expect("write the suppressions");
    let diff = Command::new("abidiff")
        .arg("--no-added-syms")
        .arg("--suppressions")
        .arg(suppressions.path())
        .arg(root().join("tests/abi/diffmine.abi"))
        .arg(dump.path())
        .output()
        .expect("run abidiff (Debian's abigail-tools; scripts/setup.sh installs it)");
    assert!(
        diff.status.success(),
        "the C ABI differs from tests/abi/diffmine.abi:\n{}\nIf intended: an incompatible change bumps the minor version in Cargo.toml (the soname); then \
         `cargo build --release && bash scripts/abi_dump.sh` regenerates the baseline, in the same commit.",
        show(&diff)
    );
}

/// The structs of the header whose first field is `size_t struct_size`.
fn versioned_structs(header: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut lines = header.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("typedef struct ").and_then(|rest| rest.strip_suffix(" {")) else { continue };
        let first_field = lines.by_ref().map(str::trim).find(|l| !(l.is_empty() || l.starts_with("//") || l.starts_with("/*") || l.starts_with('*')));
        if first_field == Some("size_t struct_size;") {
            names.push(name.to_string());
        }
    }
    names
}

/// libabigail suppressions that accept fields added at the end of each of `structs`.
fn appended_fields_allowed(structs: &[String]) -> String {
    structs.iter().map(|name| format!("[suppress_type]\n  type_kind = struct\n  name = {name}\n  has_data_member_inserted_at = end\n\n")).collect()
}

#[test]
fn the_versioned_structs_are_found_in_the_header() {
    let header = std::fs::read_to_string(root().join("include/diffmine.h")).expect("read include/diffmine.h");
    let versioned = versioned_structs(&header);
    for name in ["dm_model_options", "dm_typicality_options", "dm_image_info"] {
        assert!(versioned.iter().any(|v| v == name), "{name} not among {versioned:?}");
    }
    for name in ["dm_box", "dm_image_view", "dm_mined_patch"] {
        assert!(!versioned.iter().any(|v| v == name), "{name} has no struct_size, yet among {versioned:?}");
    }
}

/// Names of the functions the library exports (defined, in the dynamic symbol table).
fn exported_functions() -> BTreeSet<String> {
    let output = Command::new("nm").args(["-D", "--defined-only"]).arg(library()).output().expect("run nm");
    assert!(output.status.success(), "nm failed:\n{}", show(&output));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() == 3 && fields[1] == "T").then(|| fields[2].to_string())
        })
        .collect()
}

/// Names of the functions include/diffmine.h declares: `name(` at the start of a declaration, after
/// its return type.
fn declared_functions() -> BTreeSet<String> {
    let header = std::fs::read_to_string(root().join("include/diffmine.h")).unwrap();
    let declaration = regex::Regex::new(r"(?m)^(?:enum dm_status|const char \*|size_t|void|int32_t|uint32_t) ?\*?(dm_\w+)\(").unwrap();
    declaration.captures_iter(&header).map(|c| c[1].to_string()).collect()
}

#[test]
fn library_exports_exactly_the_functions_the_header_declares() {
    let exported = exported_functions();
    let declared = declared_functions();
    assert!(declared.len() > 50, "found only {} declarations in diffmine.h", declared.len());
    let undeclared: Vec<_> = exported.difference(&declared).collect();
    let missing: Vec<_> = declared.difference(&exported).collect();
    assert!(undeclared.is_empty(), "exported but not in diffmine.h: {undeclared:?}");
    assert!(missing.is_empty(), "declared in diffmine.h but not exported: {missing:?}");
}
