//! The report: each scenario's figures, printed as a table, per-scenario counts and one JSON line.

use std::collections::BTreeMap;

use crate::load::{Tally, PAYLOAD_BYTES};
use crate::Args;

/// The figures of one scenario.
pub(crate) struct Figures {
    name: &'static str,
    nodes: usize,
    acked_per_sec: f64,
    ack_ms: [f64; 3],
    delivered_per_sec: f64,
    e2e_ms: [f64; 3],
    sent: u64,
    accepted: u64,
    received: u64,
    lost: u64,
    duplicates_or_reordered: u64,
    unanswered: u64,
    ack_requests: u64,
    errors: BTreeMap<String, u64>,
}

/// p50, p99 and max of microsecond samples, in milliseconds (nearest rank).
fn percentiles_ms(samples: &mut [u64]) -> [f64; 3] {
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1] as f64 / 1000.0
    };
    [at(0.50), at(0.99), at(1.0)]
}

impl Figures {
    pub(crate) fn new(name: &'static str, nodes: usize, tally: &Tally, args: &Args) -> Figures {
        let secs = args.secs as f64;
        let mut ack = tally.ack_latency_us.clone();
        let mut e2e = tally.e2e_latency_us.clone();
        Figures {
            name,
            nodes,
            acked_per_sec: tally.acked_measured as f64 / secs,
            ack_ms: percentiles_ms(&mut ack),
            delivered_per_sec: tally.delivered_measured as f64 / secs,
            e2e_ms: percentiles_ms(&mut e2e),
            sent: tally.sent,
            accepted: tally.accepted,
            received: tally.received,
            lost: tally.accepted.saturating_sub(tally.received),
            duplicates_or_reordered: tally.duplicates_or_reordered,
            unanswered: tally.unanswered,
            ack_requests: tally.ack_requests,
            errors: tally.errors.clone(),
        }
    }

    fn per_node(&self) -> f64 {
        self.acked_per_sec / self.nodes as f64
    }

    fn json(&self) -> String {
        format!(
            "{{\"scenario\":\"{}\",\"nodes\":{},\"acked_per_sec\":{:.1},\"acked_per_sec_per_node\":{:.1},\"ack_p50_ms\":{:.3},\"ack_p99_ms\":{:.3},\"ack_max_ms\":{:.3},\"delivered_per_sec\":{:.1},\"e2e_p50_ms\":{:.3},\"e2e_p99_ms\":{:.3},\"e2e_max_ms\":{:.3},\"sent\":{},\"accepted\":{},\"received\":{},\"lost\":{},\"duplicates_or_reordered\":{},\"unanswered\":{},\"ack_requests\":{},\"errors\":{}}}",
            self.name,
            self.nodes,
            self.acked_per_sec,
            self.per_node(),
            self.ack_ms[0],
            self.ack_ms[1],
            self.ack_ms[2],
            self.delivered_per_sec,
            self.e2e_ms[0],
            self.e2e_ms[1],
            self.e2e_ms[2],
            self.sent,
            self.accepted,
            self.received,
            self.lost,
            self.duplicates_or_reordered,
            self.unanswered,
            self.ack_requests,
            self.errors.values().sum::<u64>(),
        )
        .replace("NaN", "null")
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

pub(crate) fn print_report(results: &[Figures], args: &Args) {
    println!();
    println!(
        "{:<24} {:>5} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6}",
        "scenario",
        "nodes",
        "acked/s",
        "per node",
        "ack p50",
        "ack p99",
        "ack max",
        "deliv/s",
        "e2e p50",
        "e2e p99",
        "e2e max",
        "errors",
        "lost"
    );
    for f in results {
        println!(
            "{:<24} {:>5} {:>9.0} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>6}",
            f.name,
            f.nodes,
            f.acked_per_sec,
            f.per_node(),
            f.ack_ms[0],
            f.ack_ms[1],
            f.ack_ms[2],
            f.delivered_per_sec,
            f.e2e_ms[0],
            f.e2e_ms[1],
            f.e2e_ms[2],
            f.errors.values().sum::<u64>(),
            f.lost,
        );
    }
    println!("(latencies in ms; acked/s = SendMessage answered MessageAccepted per second; e2e = send to Envelope push)");
    for f in results {
        println!(
            "{}: sent {}, accepted {}, received {}, unanswered {}, duplicates/reordered {}, receiver Ack requests {}",
            f.name, f.sent, f.accepted, f.received, f.unanswered, f.duplicates_or_reordered, f.ack_requests
        );
        for (what, n) in &f.errors {
            println!("  error x{n}: {what}");
        }
    }
    let find = |nodes: usize, pg: bool| {
        results
            .iter()
            .find(|f| f.nodes == nodes && f.name.contains("PostgreSQL") == pg)
    };
    let sqlite = find(1, false).map(|f| f.acked_per_sec);
    let pg = find(1, true).map(|f| f.acked_per_sec);
    let two_per_node = find(2, true).map(Figures::per_node);
    let pg_vs_sqlite = ratio(pg, sqlite);
    let two_vs_one = ratio(two_per_node, pg);
    let show = |r: Option<f64>| r.map_or("n/a".to_owned(), |r| format!("{r:.2}"));
    println!(
        "PostgreSQL / SQLite throughput (1 node): {}",
        show(pg_vs_sqlite)
    );
    println!(
        "two-node per-node / one-node PostgreSQL throughput: {}",
        show(two_vs_one)
    );
    let json_ratio = |r: Option<f64>| r.map_or("null".to_owned(), |r| format!("{r:.3}"));
    println!(
        "{{\"bench\":\"delivery\",\"secs\":{},\"pairs\":{},\"window\":{},\"payload_bytes\":{PAYLOAD_BYTES},\"scenarios\":[{}],\"postgres_over_sqlite\":{},\"two_node_per_node_over_one_node_postgres\":{}}}",
        args.secs,
        args.pairs,
        args.window,
        results.iter().map(Figures::json).collect::<Vec<_>>().join(","),
        json_ratio(pg_vs_sqlite),
        json_ratio(two_vs_one),
    );
}
