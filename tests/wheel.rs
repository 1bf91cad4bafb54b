//! The Python wheel as a user gets it: `scripts/build_wheel.sh` packs the library of this build, pip
//! installs the wheel into a fresh venv in a temporary folder, and then, with the checkout hidden (a
//! mount namespace with an empty tmpfs over it, so nothing can load from the build tree), `import
//! diffmine` computes a typicality map on the demo model (models/demo) that must equal the map the
//! in-tree binding computes with the build tree's library. Also checked: the installed library's
//! RUNPATH is exactly `$ORIGIN/../torch/lib` (no path into the checkout), `diffmine.__version__` and
//! the installed distribution's version are Cargo.toml's, the library came from the venv and its
//! libtorch from the torch package beside it, and importing the wheel without torch or with another
//! torch version, or with torch in another folder than the rpath names, is an ImportError naming
//! `torch==<version>`.
//!
//! The fresh venv's torch: PyPI's torch 2.11.0 is 4.7 GB installed with its CUDA libraries, and
//! installing it again (from a wheel pip cached) would cost that much disk and a minute or two of
//! unpacking per run. The venv instead sees the shared venv's site-packages through a `.pth` line
//! (bind-mounted outside the checkout first, as the shared venv lives inside it in CI), and gets
//! `torch` and `nvidia` (the CUDA libraries libtorch's own rpath names) as symlinks into it, so
//! `site-packages/torch/lib` is where the wheel's rpath looks. That costs about a second (measured:
//! 0.1 s for the venv, 0.6 s for pip) and no disk;
//! what is tested is the wheel's own contents, its dependency metadata (pip resolves `torch==2.11.0`
//! and numpy against what the venv sees, with no index) and its rpath.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{build_wheel, built_library, copy_dir, python, read_json, repo_root, run_step, shared_venv};

/// Computes the map on the demo model (the finetuned UNet with the pretrained model's other parts) and
/// writes it (`OUT.npy`) with a JSON report of where the package and libraries came from.
const COMPUTE_MAP: &str = r#"
import importlib.metadata, json, sys
import numpy as np
import diffmine

demo, image, out, expected = sys.argv[1:5]
parts = {part: f"{demo}/pretrained/{part}" for part in ("vae", "text_encoder", "tokenizer", "scheduler")}
with diffmine.Model(f"{demo}/finetuned", **parts) as model:
    pixels = diffmine.read_image(image).pixels
    typicality = model.typicality(pixels, "Chest X-Ray with Nodule.", null_prompt="Chest X-Ray.", samples=8, batch=4, seed=7)
np.save(f"{out}.npy", typicality)
mapped = {line.split()[-1] for line in open("/proc/self/maps") if ".so" in line}
report = {
    "file": diffmine.__file__,
    "library": diffmine.library_path(),
    "version": diffmine.__version__,
    "loaded": sorted(p for p in mapped if "libdiffmine" in p or "libtorch_cpu" in p),
    "shape": list(typicality.shape),
    "std": float(typicality.std()),
}
if expected != "-":
    reference = np.load(expected)
    report["distribution_version"] = importlib.metadata.version("diffmine")
    report["max_abs_diff"] = float(np.abs(typicality - reference).max())
    report["reference_max_abs"] = float(np.abs(reference).max())
json.dump(report, open(f"{out}.json", "w"))
"#;

/// Runs in a new mount namespace (`unshare -m`) as root. Arguments: the checkout to hide, the shared
/// venv's site-packages, the work folder, the base interpreter, the shared venv's interpreter (for its
/// pip), the wheel. Installs the wheel before hiding the checkout (pip itself lives in the shared venv),
/// then runs everything else with the checkout hidden.
const IN_NAMESPACE: &str = r#"
set -euo pipefail
checkout=$1 shared_site=$2 work=$3 base_python=$4 pip_python=$5 wheel=$6
mount --make-rprivate /
mkdir -p "$work/shared-site"
mount --bind "$shared_site" "$work/shared-site"
pip_install() { "$pip_python" -m pip --python "$1" install -q --no-index --disable-pip-version-check "${@:2}"; }
site_of() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])'; }

# The venv the map is computed in: torch and the CUDA libraries as symlinks, the rest through the .pth.
"$base_python" -m venv --without-pip "$work/venv"
site=$(site_of "$work/venv/bin/python")
ln -s "$work/shared-site/torch" "$site/torch"
ln -s "$work/shared-site/nvidia" "$site/nvidia"
echo "$work/shared-site" > "$site/shared-site.pth"
pip_install "$work/venv/bin/python" "$wheel"
echo "installed: $(readelf -d "$site/diffmine/libdiffmine.so" | grep -E 'RPATH|RUNPATH')" >&2

# A venv without torch (the wheel alone, --no-deps).
"$base_python" -m venv --without-pip "$work/no-torch"
pip_install "$work/no-torch/bin/python" --no-deps "$wheel"

mount -t tmpfs -o size=1m hidden-checkout "$checkout"
cd "$work"
unset DIFFMINE_LIB PYTHONPATH
"$work/venv/bin/python" "$work/compute_map.py" "$work/demo" "$work/image.png" "$work/installed" "$work/reference.npy"
readelf -d -S "$site/diffmine/libdiffmine.so" > "$work/installed.dynamic"

import_error() { "$1" -c 'import diffmine' 2>&1 | tail -1 || true; }
import_error "$work/no-torch/bin/python" > "$work/no-torch.txt"
# Another torch version: only its metadata, which is what the package checks before loading.
other=$(site_of "$work/no-torch/bin/python")/torch-2.10.0.dist-info
mkdir "$other"
printf 'Metadata-Version: 2.1\nName: torch\nVersion: 2.10.0\n' > "$other/METADATA"
import_error "$work/no-torch/bin/python" > "$work/other-torch.txt"
# torch 2.11.0 importable, but from another folder than the one the library's rpath names.
rm -r "$other"
echo "$work/shared-site" > "$(site_of "$work/no-torch/bin/python")/shared-site.pth"
import_error "$work/no-torch/bin/python" > "$work/torch-elsewhere.txt"
"#;

#[test]
fn the_wheel_installs_and_computes_a_map_without_the_checkout() {
    let started = Instant::now();
    let work = tempfile::tempdir().expect("temp dir");
    let work = work.path();
    let wheel = build_wheel(&work.join("dist"));
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(name, format!("diffmine-{version}-py3-none-linux_x86_64.whl"), "the wheel's name and tag");
    let size = std::fs::metadata(&wheel).expect("wheel").len();
    println!("{name}: {:.1} MB", size as f64 / 1e6);

    copy_dir(&repo_root().join("models/demo"), &work.join("demo"));
    std::fs::copy(repo_root().join("examples/data/chest_like.png"), work.join("image.png")).expect("copy the image");
    std::fs::write(work.join("compute_map.py"), COMPUTE_MAP).expect("write compute_map.py");

    // The reference: the in-tree binding on the build tree's (unstripped) library.
    run_step(
        Command::new(python())
            .arg(work.join("compute_map.py"))
            .args([work.join("demo"), work.join("image.png"), work.join("reference"), PathBuf::from("-")])
            .env("DIFFMINE_LIB", built_library())
            .env("PYTHONPATH", repo_root().join("bindings/python"))
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        "the map with the in-tree binding",
    );

    let (shared_site, base_python) = shared_venv();
    let output = run_step(
        Command::new("unshare")
            .args(["-m", "bash", "-c", IN_NAMESPACE, "in-namespace"])
            .arg(repo_root())
            .arg(&shared_site)
            .arg(work)
            .arg(&base_python)
            .arg(python())
            .arg(&wheel),
        "install the wheel in a fresh venv and compute the map with the checkout hidden (unshare -m, as root)",
    );
    print!("{}", String::from_utf8_lossy(&output.stderr));

    let report = read_json(&work.join("installed.json"));
    println!("installed: {report:#}");
    let site = Path::new(report["file"].as_str().unwrap()).parent().unwrap().parent().unwrap().to_path_buf();
    assert!(site.starts_with(work.join("venv")), "diffmine imported from the fresh venv, not {}", site.display());
    assert_eq!(report["library"].as_str().unwrap(), site.join("diffmine/libdiffmine.so").to_str().unwrap());
    let loaded: Vec<&str> = report["loaded"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(loaded.len(), 2, "one libdiffmine and one libtorch_cpu loaded: {loaded:?}");
    assert!(loaded.iter().all(|p| p.starts_with(work.to_str().unwrap())), "both loaded from the temp folder: {loaded:?}");
    assert_eq!(report["version"], version, "diffmine.__version__");
    assert_eq!(report["distribution_version"], version, "the installed distribution's version");

    let reference = read_json(&work.join("reference.json"));
    assert_eq!(report["shape"], reference["shape"]);
    assert!(reference["std"].as_f64().unwrap() > 0.0, "the map is not constant: {reference}");
    // The same code (stripping removes only line tables) on the same machine and threads: equal up to
    // float rounding at most.
    let (diff, scale) = (report["max_abs_diff"].as_f64().unwrap(), report["reference_max_abs"].as_f64().unwrap());
    assert!(diff <= 1e-6 * scale, "the installed wheel's map differs from the in-tree one by {diff:e} (max |map| {scale:e})");

    // Its dynamic section and section headers.
    let dynamic = std::fs::read_to_string(work.join("installed.dynamic")).expect("readelf output");
    let paths: Vec<&str> = dynamic.lines().filter(|l| l.contains("RPATH") || l.contains("RUNPATH")).collect();
    assert_eq!(paths.len(), 1, "one run path entry: {paths:?}");
    assert!(paths[0].contains("(RUNPATH)") && paths[0].ends_with("[$ORIGIN/../torch/lib]"), "{}", paths[0]);
    assert!(!dynamic.contains(".debug_"), "no debug sections are left in the installed library");
    // Only the run path decides where the loader looks: the library's read-only data still holds the
    // libtorch header paths of PyTorch's assertion messages (and patchelf leaves the old run path's
    // bytes behind), which may lie inside the checkout and are never opened.
    let checkout = repo_root().to_string_lossy().into_owned();
    assert!(!dynamic.contains(&checkout), "the installed library's dynamic section names the checkout {checkout}");
    let installed = std::fs::read(site.join("diffmine/libdiffmine.so")).expect("the installed library");
    let built = std::fs::metadata(built_library()).expect("the built library").len();
    println!("installed libdiffmine.so: {:.1} MB (build tree: {:.1} MB)", installed.len() as f64 / 1e6, built as f64 / 1e6);

    let torch = "torch==2.11.0";
    let no_torch = std::fs::read_to_string(work.join("no-torch.txt")).expect("no-torch output");
    assert!(no_torch.starts_with("ImportError") && no_torch.contains(torch) && no_torch.contains("not installed"), "without torch: {no_torch}");
    let other = std::fs::read_to_string(work.join("other-torch.txt")).expect("other-torch output");
    assert!(other.starts_with("ImportError") && other.contains(torch) && other.contains("torch 2.10.0 is installed"), "with torch 2.10.0: {other}");
    let elsewhere = std::fs::read_to_string(work.join("torch-elsewhere.txt")).expect("torch-elsewhere output");
    assert!(
        elsewhere.starts_with("ImportError") && elsewhere.contains(torch) && elsewhere.contains("libtorch_cpu.so"),
        "with torch in another folder: {elsewhere}"
    );
    println!("without torch: {no_torch}with torch 2.10.0: {other}with torch elsewhere: {elsewhere}");
    println!("wheel test: {:.1} s", started.elapsed().as_secs_f64());
}
