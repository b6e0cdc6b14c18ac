//! Progress bars on stderr for the long commands (apply, check, lock, export): drawn only on a
//! terminal, never for `--format json`, and only once the work has taken a second.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long work runs before a bar appears: a quick command prints nothing extra.
const DELAY: Duration = Duration::from_secs(1);

/// [`DELAY`], unless `JAILPROV_PROGRESS_DELAY_MS` says otherwise (the tests set 0, so that a
/// bar shows however fast the machine applies their jail).
fn delay() -> Duration {
    std::env::var("JAILPROV_PROGRESS_DELAY_MS")
        .ok()
        .and_then(|millis| millis.parse().ok())
        .map_or(DELAY, Duration::from_millis)
}

/// How often a drawn bar redraws (its rate and elapsed time move even between steps).
const TICK: Duration = Duration::from_millis(100);

/// A bar that may never show. Cheap to advance when hidden.
pub struct Progress {
    bar: ProgressBar,
    /// The title, e.g. "apply".
    what: String,
    /// Steps in all, and done so far.
    items: u64,
    finished_items: std::sync::atomic::AtomicU64,
    /// Whether the bar measures bytes (else steps).
    counts_bytes: bool,
    /// Set when the work is done, under the lock the delayed start takes: a bar never starts
    /// drawing after it was finished.
    done: Arc<Mutex<bool>>,
}

impl Progress {
    /// A bar for `items` steps moving `bytes` bytes (0: the step count only), titled `what`,
    /// shown when `wanted` (not JSON), stderr is a terminal, and the work outlasts [`DELAY`].
    pub fn items_and_bytes(what: &str, items: u64, bytes: u64, wanted: bool) -> Progress {
        let template = if bytes > 0 {
            "{msg} {wide_bar:.green/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
        } else {
            "{msg} {wide_bar:.green/blue} eta {eta}"
        };
        let bar =
            ProgressBar::with_draw_target(Some(if bytes > 0 { bytes } else { items }), ProgressDrawTarget::hidden());
        bar.set_style(ProgressStyle::with_template(template).expect("the template is valid").progress_chars("=> "));
        Progress::start(bar, what, items, bytes > 0, wanted)
    }

    /// A spinner for work whose size is not known ahead (hashing a lock, writing an image).
    pub fn spinner(what: &str, wanted: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{spinner:.green} {msg} ({elapsed})").expect("the template is valid"),
        );
        Progress::start(bar, what, 0, false, wanted)
    }

    fn start(bar: ProgressBar, what: &str, items: u64, counts_bytes: bool, wanted: bool) -> Progress {
        let progress = Progress {
            bar,
            what: what.to_owned(),
            items,
            finished_items: std::sync::atomic::AtomicU64::new(0),
            counts_bytes,
            done: Arc::new(Mutex::new(false)),
        };
        progress.bar.set_message(Progress::message(what, 0, items));
        if wanted && std::io::stderr().is_terminal() {
            let (bar, done) = (progress.bar.clone(), Arc::clone(&progress.done));
            std::thread::spawn(move || {
                std::thread::sleep(delay());
                let done = done.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if !*done {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                    bar.enable_steady_tick(TICK);
                }
            });
        }
        progress
    }

    fn message(what: &str, done: u64, items: u64) -> String {
        if items == 0 {
            what.to_owned()
        } else {
            format!("{what} {done}/{items}")
        }
    }

    /// One step done, `bytes` of it written or read (from any thread).
    pub fn step(&self, bytes: u64) {
        let finished = self.finished_items.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.bar.set_message(Progress::message(&self.what, finished, self.items));
        self.bar.inc(if self.counts_bytes { bytes } else { 1 });
    }

    /// Runs `print` with the bar taken off the screen, so lines on stdout do not tear it.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        self.bar.suspend(print)
    }

    /// Takes the bar off the screen for good.
    pub fn finish(&self) {
        let mut done = self.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *done = true;
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
