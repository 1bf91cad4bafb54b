//! libdiffmine's half of the UMAP benchmark (`benches/umap.sh` runs `benches/umap_compare.py`, which
//! runs this against umap-learn on the same data).
//!
//! Usage: umap FEATURES.npy EMBEDDING.npy
//!
//! Reads a float32 (n, d) `.npy`, embeds it with `diffmine::mining::cotypicality::umap::embed` as the
//! co-typicality miner does (15 neighbours, 32 components, seed 42, the other options at their
//! defaults), writes the (n, 32) embedding as `.npy` and prints one JSON line: n, dims, the seconds of
//! `embed` (reading and writing the files are outside it), the seconds of each of its stages (the
//! library's `knn`, `fuzzy_graph`, `init` and `sgd` tracing spans) and the process's peak RSS.
//! libtorch (the neighbour search's matmul) runs with 2 intra-op threads; the rest is one thread.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use diffmine::mining::cotypicality::umap::{embed, UmapOptions};
use tch::Tensor;
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const THREADS: i32 = 2;
/// The tracing span `embed` opens around its stages.
const UMAP_SPAN: &str = "umap";

/// Seconds spent in each stage of `embed`: the spans opened directly inside its `umap` span.
#[derive(Clone, Default)]
struct StageClock {
    seconds: Arc<Mutex<BTreeMap<&'static str, f64>>>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for StageClock {
    fn on_new_span(&self, _attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        if let Some(span) = context.span(id) {
            span.extensions_mut().insert(Instant::now());
        }
    }

    fn on_close(&self, id: Id, context: Context<'_, S>) {
        let Some(span) = context.span(&id) else { return };
        let is_stage = span.parent().is_some_and(|parent| parent.name() == UMAP_SPAN);
        let Some(elapsed) = span.extensions().get::<Instant>().map(Instant::elapsed) else { return };
        if is_stage {
            *self.seconds.lock().unwrap().entry(span.name()).or_default() += elapsed.as_secs_f64();
        }
    }
}

/// The process's peak resident set (VmHWM), in bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status.lines().find_map(|line| line.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [features, embedding] = args.as_slice() else {
        eprintln!("usage: umap FEATURES.npy EMBEDDING.npy");
        std::process::exit(2);
    };
    tch::set_num_threads(THREADS);
    let clock = StageClock::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(clock.clone())).expect("the only subscriber");

    let x = Tensor::read_npy(features).expect("read the features");
    let (n, dims) = x.size2().expect("an (n, d) matrix");
    let options = UmapOptions { neighbors: 15, components: 32, seed: 42, ..UmapOptions::default() };
    let started = Instant::now();
    let projected = embed(&x, &options).expect("embed");
    let seconds = started.elapsed().as_secs_f64();
    projected.write_npy(PathBuf::from(embedding)).expect("write the embedding");

    let record = serde_json::json!({
        "impl": "libdiffmine",
        "n": n,
        "dims": dims,
        "neighbors": options.neighbors,
        "components": options.components,
        "threads": THREADS,
        "seconds": seconds,
        "stages": *clock.seconds.lock().unwrap(),
        "peak_rss_bytes": peak_rss_bytes(),
    });
    println!("{record}");
}
