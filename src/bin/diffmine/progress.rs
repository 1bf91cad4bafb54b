//! What a long command shows while it works, and how Ctrl-C stops it: a bar with rate and time left on
//! a terminal, a plain line every 30 s elsewhere (a log file), nothing with `--quiet`; `tracing` output
//! (`-v`, `RUST_LOG`) printed around the bar. Ctrl-C sets a flag that every progress callback reads: the
//! library then stops at its next step and returns `Error::Cancelled`, before any output is written.
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static CANCELLED: AtomicBool = AtomicBool::new(false);
static QUIET: OnceLock<bool> = OnceLock::new();
/// The bar on screen, if any, so that log lines can be printed above it instead of through it.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// How often a plain progress line is written when stderr is not a terminal.
const PLAIN_LINE_EVERY: Duration = Duration::from_secs(30);

/// Exit status of a command stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const CANCELLED_EXIT: u8 = 130;

/// Ctrl-C asks the running work to stop; a second Ctrl-C (work that does not reach a progress
/// callback, e.g. while a model loads) exits at once.
pub fn install_cancellation() {
    let installed = ctrlc::set_handler(|| {
        if CANCELLED.swap(true, Ordering::SeqCst) {
            std::process::exit(CANCELLED_EXIT.into());
        }
    });
    if let Err(err) = installed {
        tracing::warn!("Ctrl-C will not cancel cleanly: {err}");
    }
}

pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// Whether progress is shown at all (`--quiet` turns it off); set once, before any work.
pub fn set_quiet(quiet: bool) {
    let _ = QUIET.set(quiet);
}

/// `tracing` output on stderr, by `RUST_LOG` when it is set, else by the `-v` count (warnings by
/// default, errors only with `--quiet`).
pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "warn,diffmine=info",
        (false, 2) => "warn,diffmine=debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(std::io::stderr().is_terminal()).with_writer(LogLine::default).init();
}

/// One log event, written to stderr in one piece when tracing drops it, with the bar (if any) cleared
/// for the moment.
#[derive(Default)]
struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let bar = ACTIVE_BAR.lock().ok().and_then(|bar| bar.clone());
        let write = || {
            let _ = std::io::stderr().write_all(&self.0);
        };
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

/// The progress of one piece of work. [`Progress::update`] is the library's progress callback: it
/// returns false once Ctrl-C was pressed.
pub struct Progress {
    display: Display,
}

enum Display {
    Hidden,
    Bar(ProgressBar),
    Lines { what: &'static str, started: Instant, last_line: Instant },
}

impl Progress {
    /// `what` names the units counted (steps, samples, images).
    pub fn new(what: &'static str) -> Self {
        let display = if *QUIET.get().unwrap_or(&false) {
            Display::Hidden
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let template = format!("[{{bar:30}}] {{pos}}/{{len}} {what} {{per_sec}} {{msg}} ETA {{eta}}");
            bar.set_style(ProgressStyle::with_template(&template).expect("a valid template").progress_chars("#>-"));
            *ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
            Display::Bar(bar)
        } else {
            let now = Instant::now();
            Display::Lines { what, started: now, last_line: now }
        };
        Progress { display }
    }

    /// `value`: the current loss, or NaN where there is none.
    pub fn update(&mut self, done: u64, total: u64, value: f64) -> bool {
        let loss = if value.is_nan() { String::new() } else { format!("loss {value:.4}") };
        match &mut self.display {
            Display::Hidden => {}
            Display::Bar(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(loss);
            }
            Display::Lines { what, started, last_line } => {
                if done == total || last_line.elapsed() >= PLAIN_LINE_EVERY {
                    *last_line = Instant::now();
                    eprintln!("{}", plain_line(done, total, what, started.elapsed(), &loss));
                }
            }
        }
        !cancelled()
    }

    /// The callback most library functions take: (done, total), no value.
    pub fn callback(&mut self) -> impl FnMut(u64, u64) -> bool + '_ {
        move |done, total| self.update(done, total, f64::NAN)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
            *ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

/// "12/100 samples, 3.1/s, 28 s left[, loss 0.1234]".
fn plain_line(done: u64, total: u64, what: &str, elapsed: Duration, loss: &str) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let rate = done as f64 / seconds;
    let left = if done == 0 { f64::NAN } else { seconds * (total.saturating_sub(done)) as f64 / done as f64 };
    let loss = if loss.is_empty() { String::new() } else { format!(", {loss}") };
    format!("{done}/{total} {what}, {rate:.2}/s, {left:.0} s left{loss}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_gives_the_rate_and_the_time_left() {
        assert_eq!(plain_line(25, 100, "samples", Duration::from_secs(10), ""), "25/100 samples, 2.50/s, 30 s left");
        assert_eq!(plain_line(100, 100, "steps", Duration::from_secs(4), "loss 0.5000"), "100/100 steps, 25.00/s, 0 s left, loss 0.5000");
    }
}
