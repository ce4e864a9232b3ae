//! The progress line on standard error: phase, elapsed/total seconds and the current rates.
//! On a terminal it rewrites itself in place; otherwise it prints one line per second.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::load::{Clock, DRAIN_LIMIT};
use super::tally::Live;

/// How often the line is rewritten on a terminal.
const TERMINAL_TICK: Duration = Duration::from_millis(250);
/// How often a line is printed when standard error is not a terminal.
const LOG_TICK: Duration = Duration::from_secs(1);

/// A running progress line; [`Progress::finish`] ends it.
pub(crate) struct Progress {
    task: JoinHandle<()>,
    terminal: bool,
}

impl Progress {
    /// Starts printing the progress of scenario `name`, for at most the scenario's time line
    /// plus the drain limit.
    pub(crate) fn start(name: String, clock: Clock, live: Arc<Live>) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let tick = if terminal { TERMINAL_TICK } else { LOG_TICK };
        let task = tokio::spawn(async move {
            let total = clock.end.duration_since(clock.base).as_secs_f64();
            let mut last = (Instant::now(), live.read());
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
            while Instant::now() < clock.end + DRAIN_LIMIT {
                ticker.tick().await;
                let now = Instant::now();
                let counts = live.read();
                let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
                let acked_rate = counts.0.saturating_sub(last.1 .0) as f64 / secs;
                let delivered_rate = counts.1.saturating_sub(last.1 .1) as f64 / secs;
                last = (now, counts);
                let phase = if now < clock.measure_from {
                    "warm-up  "
                } else if now < clock.end {
                    "measuring"
                } else {
                    "draining "
                };
                let elapsed = now.duration_since(clock.base).as_secs_f64().min(total);
                let line = format!(
                    "{name}: {phase} {elapsed:5.1}/{total:.1} s  {delivered_rate:9.0} delivered/s  {acked_rate:9.0} acked/s"
                );
                let mut err = std::io::stderr().lock();
                let _ = if terminal {
                    write!(err, "\r{line}\x1b[K")
                } else {
                    writeln!(err, "{line}")
                };
                let _ = err.flush();
            }
        });
        Progress { task, terminal }
    }

    /// Stops the line and ends it with a newline on a terminal.
    pub(crate) async fn finish(self) {
        self.task.abort();
        let _ = self.task.await;
        if self.terminal {
            eprintln!();
        }
    }
}
