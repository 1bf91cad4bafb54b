//! One source of truth for the C API and the Python binding's ctypes declarations
//! (bindings/python/diffmine/_lib.py): every struct that include/diffmine.h defines must have a ctypes
//! declaration with the same size and the same offset and size of every field; the defaults the
//! library fills in (`dm_*_options_default`) must read the same through those declarations as from C;
//! and every function of the header must have a ctypes prototype with the same return and parameter
//! types. A C program generated from the header prints sizeof/offsetof and the defaults, this test
//! writes the prototypes from the header in the same canonical form, tests/option_structs.py prints
//! all of it from ctypes, and every line must match. A struct or function added to the header without
//! its Python declaration fails here, as does a field or parameter added, moved or retyped on one side.
mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use common::{built_library, compile_c, python, repo_root};

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

/// The header's code: without comments and preprocessor lines.
fn header_code(header: &str) -> String {
    let mut code = String::new();
    let mut rest = header;
    while let Some(start) = rest.find("/*") {
        code.push_str(&rest[..start]);
        rest = &rest[start + rest[start..].find("*/").expect("an unterminated comment") + 2..];
    }
    code.push_str(rest);
    code.lines().map(|l| l.split("//").next().unwrap()).filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n")
}

/// A C type in the canonical form tests/option_structs.py writes for a ctypes type: integers and
/// floats by signedness and width (`size_t` is `u64`, an enum `i32`), pointers with `*`, a handle
/// (a pointer to an opaque struct) as `void*`, without `const`, `struct` or `enum`.
fn canonical(c_type: &[&str], opaque: &BTreeSet<&str>) -> String {
    let stars = c_type.iter().filter(|t| **t == "*").count();
    let base: Vec<&str> = c_type.iter().copied().filter(|t| !matches!(*t, "*" | "const" | "struct" | "enum")).collect();
    let base = match base.as_slice() {
        ["uint64_t"] | ["size_t"] => "u64",
        ["uint32_t"] => "u32",
        ["uint8_t"] => "u8",
        ["int32_t"] | ["dm_status"] => "i32",
        ["int64_t"] => "i64",
        ["double"] => "f64",
        ["float"] => "f32",
        [name] if opaque.contains(name) => "void",
        [name] => name,
        other => panic!("a C type this test does not know: {other:?}"),
    };
    format!("{base}{}", "*".repeat(stars))
}

/// `proto NAME RETURN(PARAM, ...)` for every function the header declares, canonical types.
fn header_prototypes(header: &str) -> Vec<String> {
    let code = header_code(header);
    let opaque: BTreeSet<&str> = header.lines().filter_map(|l| l.strip_prefix("typedef struct ")?.strip_suffix(';')?.split_whitespace().next()).collect();
    let tokens = |text: &str| -> Vec<String> { text.replace('*', " * ").split_whitespace().map(String::from).collect() };
    let mut prototypes = Vec::new();
    for statement in code.split(';') {
        let statement = statement.rsplit(['{', '}']).next().unwrap().trim();
        let Some((head, params)) = statement.split_once('(') else { continue };
        if head.starts_with("typedef") {
            continue;
        }
        let head = tokens(head);
        let (name, ret) = head.split_last().expect("a function name");
        let ret: Vec<&str> = ret.iter().map(String::as_str).collect();
        let params = params.strip_suffix(')').expect("a parameter list");
        let params: Vec<String> = params
            .split(',')
            .map(tokens)
            .filter(|p| p != &["void"])
            .map(|p| {
                let typ: Vec<&str> = p[..p.len() - 1].iter().map(String::as_str).collect();
                canonical(&typ, &opaque)
            })
            .collect();
        prototypes.push(format!("proto {name} {}({})", canonical(&ret, &opaque), params.join(", ")));
    }
    prototypes
}

fn show(output: &Output) -> String {
    format!("status: {}\n{}{}", output.status, String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn compile_and_run(source: &Path, binary: &Path) -> String {
    compile_c(source, binary, built_library().parent().unwrap());
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
fn python_ctypes_declarations_match_the_header_in_layout_defaults_and_prototypes() {
    let header = std::fs::read_to_string(repo_root().join("include/diffmine.h")).expect("include/diffmine.h");
    let structs = header_structs(&header);
    let options = structs.iter().filter(|s| s.name.ends_with("_options")).count();
    assert!(options >= 10 && structs.len() > options, "parsed {} structs ({options} options structs) from the header", structs.len());

    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("layout.c");
    std::fs::write(&source, c_program(&structs, &header)).expect("write layout.c");
    let prototypes = header_prototypes(&header);
    assert!(prototypes.len() >= 50, "parsed {} functions from the header", prototypes.len());
    let c = compile_and_run(&source, &dir.path().join("layout")) + &prototypes.join("\n");
    let py = python_layout();

    let c_lines: BTreeSet<&str> = c.lines().collect();
    let py_lines: BTreeSet<&str> = py.lines().collect();
    let defaults = c_lines.iter().filter(|l| l.starts_with("default ")).count();
    let fields = structs.iter().map(|s| s.fields.len()).sum::<usize>();
    println!("{} structs, {fields} fields, {defaults} defaults, {} prototypes compared", structs.len(), prototypes.len());
    let only_c: Vec<&&str> = c_lines.difference(&py_lines).collect();
    let only_py: Vec<&&str> = py_lines.difference(&c_lines).collect();
    assert!(
        only_c.is_empty() && only_py.is_empty(),
        "the Python ctypes declarations differ from include/diffmine.h\nonly in C:\n  {}\nonly in Python:\n  {}",
        only_c.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n  "),
        only_py.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n  ")
    );
}
