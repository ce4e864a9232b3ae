//! The report: each scenario's figures as a table on standard output, the ratios, and with
//! `--json` one JSON object holding everything as the last line.

use std::collections::BTreeMap;

use serde::Serialize;

use super::tally::Tally;

/// Latency percentiles in milliseconds (nearest rank); `None` without samples.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest sample.
    pub max: Option<f64>,
}

impl Latency {
    fn of(samples: &mut [u64]) -> Latency {
        samples.sort_unstable();
        let at = |q: f64| -> Option<f64> {
            let rank = (q * samples.len() as f64).ceil() as usize;
            samples.get(rank.max(1) - 1).map(|us| *us as f64 / 1000.0)
        };
        Latency {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// The figures of one scenario (one server under the same load).
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    /// What ran, e.g. `Tacit, 1 node, SQLite (durable)`.
    pub scenario: String,
    /// `baseline` or `tacit`.
    pub kind: &'static str,
    /// Messages delivered to receivers per measured second (the headline figure).
    pub delivered_per_sec: f64,
    /// Send-to-receive latency.
    pub e2e_latency_ms: Latency,
    /// Sends acknowledged per measured second (for Tacit: stored durably).
    pub acked_per_sec: f64,
    /// Send-to-acknowledgment latency.
    pub ack_latency_ms: Latency,
    /// Sends written per measured second (the achieved offered rate).
    pub sent_per_sec: f64,
    /// Sends written in all (warm-up and measured).
    pub sent: u64,
    /// Sends acknowledged in all.
    pub accepted: u64,
    /// Messages received in all, in order and once each.
    pub received: u64,
    /// Acknowledged but never received within the drain limit.
    pub lost: u64,
    /// Received twice or out of order.
    pub duplicates_or_reordered: u64,
    /// Sends never answered within the drain limit.
    pub unanswered: u64,
    /// Receiver Ack requests (Tacit only).
    pub ack_requests: u64,
    /// Refused or unexpectedly answered requests, in all.
    pub errors: u64,
    /// The same, by description.
    pub error_kinds: BTreeMap<String, u64>,
}

impl Figures {
    /// Figures of a scenario measured for `secs` seconds.
    pub(crate) fn new(scenario: String, kind: &'static str, mut tally: Tally, secs: u64) -> Self {
        let secs = secs.max(1) as f64;
        Figures {
            scenario,
            kind,
            delivered_per_sec: tally.delivered_measured as f64 / secs,
            e2e_latency_ms: Latency::of(&mut tally.e2e_latency_us),
            acked_per_sec: tally.acked_measured as f64 / secs,
            ack_latency_ms: Latency::of(&mut tally.ack_latency_us),
            sent_per_sec: tally.sent_measured as f64 / secs,
            sent: tally.sent,
            accepted: tally.accepted,
            received: tally.received,
            lost: tally.accepted.saturating_sub(tally.received),
            duplicates_or_reordered: tally.duplicates_or_reordered,
            unanswered: tally.unanswered,
            ack_requests: tally.ack_requests,
            errors: tally.errors.values().sum(),
            error_kinds: tally.errors,
        }
    }
}

/// `a / b`, `None` unless both are there and `b` is positive.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// Prints the table, the per-scenario counts and errors.
pub(crate) fn print_table(results: &[Figures]) {
    println!();
    println!(
        "{:<44} {:>9} {:>9} {:>7} {:>7} {:>7} {:>8} {:>9} {:>7} {:>7} {:>6} {:>5}",
        "scenario",
        "deliv/s",
        "e2e p50",
        "p95",
        "p99",
        "max",
        "acked/s",
        "ack p50",
        "p99",
        "sent/s",
        "errors",
        "lost",
    );
    for f in results {
        let (e, a) = (&f.e2e_latency_ms, &f.ack_latency_ms);
        println!(
            "{:<44} {:>9.0} {:>9} {:>7} {:>7} {:>7} {:>8.0} {:>9} {:>7} {:>7.0} {:>6} {:>5}",
            f.scenario,
            f.delivered_per_sec,
            ms(e.p50),
            ms(e.p95),
            ms(e.p99),
            ms(e.max),
            f.acked_per_sec,
            ms(a.p50),
            ms(a.p99),
            f.sent_per_sec,
            f.errors,
            f.lost,
        );
    }
    println!("(per measured second; latencies in ms: e2e = send to receive, ack = send to acknowledgment)");
    for f in results {
        println!(
            "{}: sent {}, accepted {}, received {}, unanswered {}, duplicates/reordered {}, receiver Ack requests {}",
            f.scenario, f.sent, f.accepted, f.received, f.unanswered, f.duplicates_or_reordered, f.ack_requests
        );
        for (what, n) in &f.error_kinds {
            println!("  error x{n}: {what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank_in_milliseconds() {
        let mut samples: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let l = Latency::of(&mut samples);
        assert_eq!(
            (l.p50, l.p95, l.p99, l.max),
            (Some(50.0), Some(95.0), Some(99.0), Some(100.0))
        );
    }

    #[test]
    fn no_samples_give_no_percentiles_rather_than_zero() {
        let l = Latency::of(&mut []);
        assert_eq!((l.p50, l.max), (None, None));
    }

    #[test]
    fn a_ratio_needs_both_figures_and_a_positive_divisor() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(4.0)), None);
    }
}
