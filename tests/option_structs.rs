//! One source of truth for the structs of the C API: every struct that include/diffmine.h defines must
//! have a ctypes declaration in the Python binding (bindings/python/diffmine/_lib.py) with the same
//! size and the same offset and size of every field, and the defaults the library fills in
//! (`dm_*_options_default`) must read the same through those declarations as from C. A C program
//! generated from the header prints sizeof/offsetof and the defaults; tests/option_structs.py prints
//! the same from ctypes; every line must match. A struct added to the header without its Python
//! declaration fails here, as does a field added, moved or retyped on one side only.
mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use common::{built_library, python, repo_root};

/// A field of a struct in the header: its C type (as written, without the name) and name.
struct Field {
    c_type: String,
    name: String,
}

struct Struct {
    name: String,
    fields: Vec<Field>,
}

/// The structs with a body in the header (`typedef struct dm_x { ... } dm_x;`); opaque handles have none.
fn header_structs(header: &str) -> Vec<Struct> {
    let mut structs = Vec::new();
    let mut current: Option<Struct> = None;
    for line in header.lines() {
        let code = line.split("//").next().unwrap().trim();
        if let Some(rest) = code.strip_prefix("typedef struct ") {
            if let Some(name) = rest.strip_suffix(" {") {
                current = Some(Struct { name: name.to_string(), fields: Vec::new() });
            }
        } else if code.starts_with('}') {
            structs.extend(current.take());
        } else if let (Some(s), Some(declaration)) = (current.as_mut(), code.strip_suffix(';')) {
            let split = declaration.rfind([' ', '*']).expect("a field declaration");
            let (c_type, name) = declaration.split_at(split + 1);
            s.fields.push(Field { c_type: c_type.trim().to_string(), name: name.to_string() });
        }
    }
    assert!(current.is_none(), "an unterminated struct in the header");
    structs
}

/// The C expression that prints `options.<field>` as tests/option_structs.py prints it.
fn print_default(s: &Struct, field: &Field) -> String {
    let label = format!("default {}.{} ", s.name, field.name);
    let value = format!("options.{}", field.name);
    match field.c_type.as_str() {
        "const char *" => format!("if ({value}) printf(\"{label}\\\"%s\\\"\\n\", {value}); else printf(\"{label}NULL\\n\");"),
        t if t.ends_with('*') => format!("printf(\"{label}%s\\n\", {value} ? \"non-NULL\" : \"NULL\");"),
        "double" | "float" => format!("printf(\"{label}%.17g\\n\", (double){value});"),
        "int32_t" | "int64_t" => format!("printf(\"{label}%lld\\n\", (long long){value});"),
        "uint32_t" | "uint64_t" | "size_t" => format!("printf(\"{label}%llu\\n\", (unsigned long long){value});"),
        other => panic!("{}.{}: type `{other}` is not known to this test; add how to print it", s.name, field.name),
    }
}

/// A C program printing every struct's layout and every options struct's defaults.
fn c_program(structs: &[Struct], header: &str) -> String {
    let mut c = String::from("#include <stddef.h>\n#include <stdio.h>\n#include <string.h>\n#include \"diffmine.h\"\n\nint main(void) {\n");
    for s in structs {
        let name = &s.name;
        writeln!(c, "  printf(\"layout {name} %zu\\n\", sizeof({name}));").unwrap();
        for f in &s.fields {
            let field = &f.name;
            writeln!(c, "  printf(\"field {name}.{field} %zu %zu\\n\", offsetof({name}, {field}), sizeof((({name} *)0)->{field}));").unwrap();
        }
        if header.contains(&format!(" {name}_default(")) {
            writeln!(c, "  {{\n    {name} options;\n    memset(&options, 0xAB, sizeof options);").unwrap();
            writeln!(c, "    if ({name}_default(&options) != DM_OK) return 1;").unwrap();
            for f in &s.fields {
                writeln!(c, "    {}", print_default(s, f)).unwrap();
            }
            c.push_str("  }\n");
        }
    }
    c.push_str("  return 0;\n}\n");
    c
}

fn show(output: &Output) -> String {
    format!("status: {}\n{}{}", output.status, String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn compile_and_run(source: &Path, binary: &Path) -> String {
    let lib = built_library();
    let lib_dir = lib.parent().unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let output = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-I")
        .arg(repo_root().join("include"))
        .arg(source)
        .arg("-o")
        .arg(binary)
        .arg("-L")
        .arg(lib_dir)
        .arg("-ldiffmine")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .output()
        .unwrap_or_else(|e| panic!("run {cc}: {e}"));
    assert!(output.status.success(), "compiling the layout program failed:\n{}", show(&output));
    let output = Command::new(binary).output().expect("run the layout program");
    assert!(output.status.success(), "the layout program failed:\n{}", show(&output));
    String::from_utf8(output.stdout).expect("UTF-8")
}

fn python_layout() -> String {
    let output = Command::new(python())
        .arg(repo_root().join("tests/option_structs.py"))
        .env("PYTHONPATH", repo_root().join("bindings/python"))
        .env("DIFFMINE_LIB", built_library())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run tests/option_structs.py");
    assert!(output.status.success(), "tests/option_structs.py failed:\n{}", show(&output));
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
fn python_ctypes_structs_match_the_header_in_layout_and_defaults() {
    let header = std::fs::read_to_string(repo_root().join("include/diffmine.h")).expect("include/diffmine.h");
    let structs = header_structs(&header);
    let options = structs.iter().filter(|s| s.name.ends_with("_options")).count();
    assert!(options >= 10 && structs.len() > options, "parsed {} structs ({options} options structs) from the header", structs.len());

    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("layout.c");
    std::fs::write(&source, c_program(&structs, &header)).expect("write layout.c");
    let c = compile_and_run(&source, &dir.path().join("layout"));
    let py = python_layout();

    let c_lines: BTreeSet<&str> = c.lines().collect();
    let py_lines: BTreeSet<&str> = py.lines().collect();
    let defaults = c_lines.iter().filter(|l| l.starts_with("default ")).count();
    println!("{} structs, {} fields, {defaults} defaults compared", structs.len(), structs.iter().map(|s| s.fields.len()).sum::<usize>());
    let only_c: Vec<&&str> = c_lines.difference(&py_lines).collect();
    let only_py: Vec<&&str> = py_lines.difference(&c_lines).collect();
    assert!(
        only_c.is_empty() && only_py.is_empty(),
        "the Python ctypes declarations differ from include/diffmine.h\nonly in C:\n  {}\nonly in Python:\n  {}",
        only_c.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n  "),
        only_py.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n  ")
    );
}
