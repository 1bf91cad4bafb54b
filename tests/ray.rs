//! Mining on a Ray cluster (`python -m diffmine.distributed mine`, from the installed wheel) equals
//! `diffmine mine` on one machine. A two-node Ray cluster (`ray start --head` + `ray start --address`,
//! token authentication on, as Ray's default) runs inside a network namespace that has only loopback,
//! with the driver, and with the checkout hidden (tests/ray/cluster.sh); every process left in that
//! namespace is killed by its PID at the end, pass or fail. On a generated set of 12 images and one
//! unreadable file, with the demo model:
//! - a plain run gives the same report as `diffmine mine` (the same kept boxes of the same images,
//!   typicality to 1e-6, the same clusters and ranks), with actors on both nodes importing the wheel,
//!   and the unreadable image reported by name and skipped, as `diffmine mine` skips it;
//! - the same working folder with another `--samples` is refused with a message;
//! - a label none of whose images can be read fails the run with the message `diffmine mine` gives;
//! - a typicality actor killed with SIGKILL mid-run: the run completes with the same report;
//! - the driver killed with SIGKILL mid-run, then the command run again: it scores only the images
//!   not yet in the working folder and gives the same report.
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{build_wheel, copy_dir, python, repo_root, run_step, shared_venv, show};

/// Options of both commands (small, so the test stays short on two shared cores).
const MINE_OPTIONS: [&str; 24] = [
    "--model",
    "demo/finetuned",
    "--base",
    "demo/pretrained",
    "--samples",
    "2",
    "--batch",
    "2",
    "--patch",
    "16",
    "--per-image",
    "2",
    "--top",
    "4",
    "--ensemble",
    "1",
    "--t-min",
    "0.2",
    "--t-max",
    "0.6",
    "--latent",
    "mean",
    "--antithetic",
    "--stratified",
];
const CLUSTER_OPTIONS: [&str; 4] = ["--clusters", "2", "--restarts", "2"];
/// The images of the set that can be read (3 per label, 4 labels).
const READABLE: usize = 12;
const UNREADABLE: &str = "set/Nodule/00000099_000.png";

fn diffmine() -> Command {
    Command::new(env!("CARGO_BIN_EXE_diffmine"))
}

/// One row of a report's patches.csv.
#[derive(Debug)]
struct Patch {
    id: String,
    typicality: f64,
    distance: f64,
}

fn patches(report: &Path) -> Vec<Patch> {
    let csv = report.join("patches.csv");
    let text = std::fs::read_to_string(&csv).unwrap_or_else(|e| panic!("{}: {e}", csv.display()));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("label,image,x,y,size,typicality,cluster,rank_in_cluster,distance_to_centroid"));
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let id = [&fields[..5], &fields[6..8]].concat().join(",");
            Patch { id, typicality: fields[5].parse().unwrap(), distance: fields[8].parse().unwrap() }
        })
        .collect()
}

/// The report's files (names), but not the cache.
fn report_files(report: &Path) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let mut folders = vec![report.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(report).unwrap().display().to_string();
            if name == "cache" {
                continue;
            }
            if path.is_dir() {
                folders.push(path);
            } else {
                files.insert(name);
            }
        }
    }
    files
}

/// The same boxes (image, place, cluster, rank in cluster) in the same order, their typicality to
/// 1e-6 and their distance to the centroid to 1e-5, and the same report files.
fn assert_same_report(run: &Path, reference: &Path, what: &str) {
    let (ours, theirs) = (patches(run), patches(reference));
    assert_eq!(ours.len(), theirs.len(), "{what}: kept boxes");
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a.id, b.id, "{what}: the same box in the same cluster and rank");
        assert!((a.typicality - b.typicality).abs() <= 1e-6, "{what}: typicality of {}: {} vs {}", a.id, a.typicality, b.typicality);
        assert!((a.distance - b.distance).abs() <= 1e-5, "{what}: distance of {}: {} vs {}", a.id, a.distance, b.distance);
    }
    assert_eq!(report_files(run), report_files(reference), "{what}: the report's files");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A run's exit status, stdout and stderr.
fn outcome(runs: &Path, name: &str) -> (i32, String, String) {
    let status = read(&runs.join(format!("{name}.status"))).trim().parse().expect("status");
    (status, read(&runs.join(format!("{name}.out"))), read(&runs.join(format!("{name}.err"))))
}

/// The number after `word` in the summary line (`scored N images, M from the working folder, ...`).
fn count_before(text: &str, word: &str) -> usize {
    let at = text.find(word).unwrap_or_else(|| panic!("no `{word}` in:\n{text}"));
    text[..at].split_whitespace().last().unwrap().parse().unwrap()
}

/// Kills (by PID) every process still in the network namespace `netns` (`net:[inode]`); returns what
/// was left.
fn kill_leftovers(netns: &str) -> Vec<String> {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if std::fs::read_link(entry.path().join("ns/net")).is_ok_and(|ns| ns.to_string_lossy() == netns) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            left.push(format!("{pid}: {}", String::from_utf8_lossy(&cmdline).replace('\0', " ")));
            // SAFETY: kill(2) on a PID read from /proc, of a process of the namespace this test made.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    left
}

#[test]
fn mining_on_a_two_node_ray_cluster_equals_diffmine_mine() {
    let started = Instant::now();
    let work = tempfile::tempdir().expect("temp dir");
    let work = work.path();
    let wheel = build_wheel(&work.join("dist"));
    copy_dir(&repo_root().join("models/demo"), &work.join("demo"));
    run_step(diffmine().current_dir(work).args(["synth", "--out", "set", "--per-label", "3", "--size", "64", "--seed", "3"]), "diffmine synth");
    std::fs::write(work.join(UNREADABLE), b"\x89PNG\r\n\x1a\n not an image after all").unwrap();
    // A set whose second label has only the unreadable image (the first a readable one).
    let mut effusion: Vec<_> = std::fs::read_dir(work.join("set/Effusion")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    effusion.sort();
    std::fs::write(work.join("unreadable-label.csv"), format!("path,label\nset/Effusion/{},Effusion\n{UNREADABLE},Broken\n", effusion[0])).unwrap();

    let reference = run_step(
        diffmine().current_dir(work).arg("mine").args(MINE_OPTIONS).args(CLUSTER_OPTIONS).args(["--data", "set", "--out", "ref"]),
        "diffmine mine (the reference)",
    );
    let reference_log = format!("{}{}", String::from_utf8_lossy(&reference.stdout), String::from_utf8_lossy(&reference.stderr));
    assert!(reference_log.contains(UNREADABLE), "diffmine mine names the unreadable image:\n{reference_log}");
    let refused =
        diffmine().current_dir(work).arg("mine").args(MINE_OPTIONS).args(["--data", "unreadable-label.csv", "--out", "ref-unreadable"]).output().unwrap();
    let refused_log = String::from_utf8_lossy(&refused.stderr).into_owned();
    let unreadable_label = format!("label `Broken`: no image could be read ({UNREADABLE})");
    assert!(!refused.status.success() && refused_log.contains(&unreadable_label), "diffmine mine refuses a label of unreadable images:\n{refused_log}");

    let (shared_site, base_python) = shared_venv();
    let cluster = Command::new("timeout")
        .args(["-k", "10", "420", "unshare", "-m", "-n", "bash"])
        .arg(repo_root().join("tests/ray/cluster.sh"))
        .arg(repo_root())
        .arg(&shared_site)
        .arg(work)
        .arg(&base_python)
        .arg(python())
        .arg(&wheel)
        .output()
        .expect("run tests/ray/cluster.sh");
    let runs = work.join("runs");
    let left = std::fs::read_to_string(runs.join("netns")).map(|netns| kill_leftovers(netns.trim())).unwrap_or_default();
    println!("cluster.sh: {:.0} s", started.elapsed().as_secs_f64());
    assert!(cluster.status.success(), "tests/ray/cluster.sh failed:\n{}", show(&cluster));
    assert!(left.is_empty(), "processes left in the cluster's network namespace (now killed): {left:#?}");
    let stderr = String::from_utf8_lossy(&cluster.stderr);
    assert!(!stderr.contains("killed leftover"), "cluster.sh had to kill processes `ray stop` left:\n{stderr}");

    let (status, out, err) = outcome(&runs, "plain");
    assert_eq!(status, 0, "the plain run:\n{out}\n{err}");
    println!("plain run:\n{out}");
    assert_same_report(&runs.join("plain"), &work.join("ref"), "the plain run");
    assert_eq!(count_before(&out, "images,"), READABLE, "every readable image scored");
    assert!(out.contains(&format!("skipped unreadable image {UNREADABLE}")), "the unreadable image named:\n{out}");
    assert_eq!(count_before(&out, "skipped;"), 1);
    assert_eq!(count_before(&out, "nodes"), 2, "actors on both nodes");
    let wheel_library = format!("diffmine from {}/venv/", work.display());
    assert!(out.contains(&wheel_library), "the workers imported the installed wheel ({wheel_library}):\n{out}");

    let (status, out, err) = outcome(&runs, "refused");
    assert_eq!(status, 2, "a working folder of other options is refused:\n{out}\n{err}");
    assert!(err.contains("other options") && err.contains("samples"), "the refusal says why:\n{err}");

    let (status, out, err) = outcome(&runs, "unreadable-label");
    assert_eq!(status, 2, "a label none of whose images can be read fails the run:\n{out}\n{err}");
    assert!(err.contains(&unreadable_label), "the failure says what diffmine mine says ({unreadable_label}):\n{err}");

    let (status, out, err) = outcome(&runs, "actor-kill");
    let victim = read(&runs.join("actor-kill.victim"));
    assert!(!victim.trim().is_empty(), "a typicality actor was found and killed (cluster.sh stops at a failed kill)");
    assert_eq!(status, 0, "the run whose actor (PID {victim}) was killed completes:\n{out}\n{err}");
    assert_same_report(&runs.join("actor-kill"), &work.join("ref"), "the run with an actor killed");

    let parts: usize = read(&runs.join("driver-kill.parts")).trim().parse().unwrap();
    let (status, out, err) = outcome(&runs, "driver-kill");
    assert_eq!(status, 0, "the run after the driver was killed:\n{out}\n{err}");
    println!("after the driver was killed with {parts} result files written:\n{out}");
    let (scored, reused) = (count_before(&out, "images,"), count_before(&out, "from the working folder"));
    assert!(scored < READABLE && reused > 0, "the second run resumes: {scored} scored, {reused} reused");
    assert_eq!(scored + reused, READABLE, "every image once");
    assert_same_report(&runs.join("driver-kill"), &work.join("ref"), "the resumed run");
    println!("ray test: {:.0} s", started.elapsed().as_secs_f64());
}
