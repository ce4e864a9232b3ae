//! One phase of the bench (registering, or connecting): `count` jobs run by a fixed number of
//! workers until all are done or the deadline passes, with a progress line on standard error.
//! A failed job is counted (the first error kept) and the phase goes on.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::Result;

/// How often the progress line is rewritten on a terminal.
const TERMINAL_TICK: Duration = Duration::from_millis(250);
/// How often a progress line is printed when standard error is not a terminal.
const LOG_TICK: Duration = Duration::from_secs(1);

/// What a phase achieved.
pub(crate) struct Outcome<T> {
    /// The results of the jobs that succeeded, in no particular order.
    pub(crate) done: Vec<T>,
    /// Jobs that failed.
    pub(crate) failures: usize,
    /// The first failure, as text.
    pub(crate) first_error: Option<String>,
    /// From the first job started to the last one finished.
    pub(crate) elapsed: Duration,
    /// Whether the deadline cut the phase short.
    pub(crate) timed_out: bool,
}

#[derive(Default)]
struct Counters {
    next: AtomicUsize,
    ok: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(error);
        }
    }
}

/// Runs `job(0)` … `job(count - 1)` with `concurrency` in flight until all are done or
/// `deadline` passes (jobs still running then are dropped and the phase reports a timeout).
/// With `show_progress`, a progress line goes to standard error.
pub(crate) async fn run<T, F, Fut>(
    name: &'static str,
    count: usize,
    concurrency: usize,
    deadline: Instant,
    show_progress: bool,
    job: F,
) -> Outcome<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T>> + Send,
{
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let job = Arc::new(job);
    let progress =
        show_progress.then(|| tokio::spawn(progress(name, count, started, counters.clone())));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let counters = counters.clone();
        let job = job.clone();
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = counters.next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return (done, false);
                }
                match tokio::time::timeout_at(deadline, job(i)).await {
                    Err(_) => return (done, true),
                    Ok(Ok(t)) => {
                        counters.ok.fetch_add(1, Ordering::Relaxed);
                        done.push(t);
                    }
                    Ok(Err(e)) => counters.fail(e.to_string()),
                }
            }
        });
    }
    let mut outcome = Outcome {
        done: Vec::with_capacity(count),
        failures: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        timed_out: false,
    };
    while let Some(finished) = workers.join_next().await {
        match finished {
            Ok((done, timed_out)) => {
                outcome.done.extend(done);
                outcome.timed_out |= timed_out;
            }
            Err(e) => counters.fail(format!("a worker failed: {e}")),
        }
    }
    outcome.elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        let _ = progress.await;
        print_line(name, count, started, &counters, true);
    }
    outcome.failures = counters.failed.load(Ordering::Relaxed);
    outcome.first_error = counters.first_error.lock().ok().and_then(|e| e.clone());
    outcome
}

async fn progress(name: &'static str, count: usize, started: Instant, counters: Arc<Counters>) {
    let tick = if std::io::stderr().is_terminal() {
        TERMINAL_TICK
    } else {
        LOG_TICK
    };
    let mut ticker = tokio::time::interval_at(started + tick, tick);
    loop {
        ticker.tick().await;
        print_line(name, count, started, &counters, false);
    }
}

/// Writes the progress line; `last` ends it with a newline on a terminal.
fn print_line(name: &str, count: usize, started: Instant, counters: &Counters, last: bool) {
    let ok = counters.ok.load(Ordering::Relaxed);
    let failed = counters.failed.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let rate = ok as f64 / secs.max(1e-3);
    let line = format!("{name}: {ok}/{count} ok, {failed} failed, {secs:6.1} s, {rate:8.0}/s");
    let mut err = std::io::stderr().lock();
    let _ = if !err.is_terminal() {
        writeln!(err, "{line}")
    } else if last {
        writeln!(err, "\r{line}\x1b[K")
    } else {
        write!(err, "\r{line}\x1b[K")
    };
    let _ = err.flush();
}
