//! Counts and latency samples of the devices, merged per scenario.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts and samples of one device (or, merged, of one scenario).
#[derive(Default)]
pub(crate) struct Tally {
    /// SendMessage requests (or baseline frames) written.
    pub(crate) sent: u64,
    /// Of those, written during the measured interval.
    pub(crate) sent_measured: u64,
    /// Sends acknowledged as accepted.
    pub(crate) accepted: u64,
    /// Acknowledgments received during the measured interval.
    pub(crate) acked_measured: u64,
    /// Send-to-acknowledgment latencies of the measured acknowledgments, microseconds.
    pub(crate) ack_latency_us: Vec<u64>,
    /// Bench messages received, in order and once each.
    pub(crate) received: u64,
    /// Of those, received during the measured interval.
    pub(crate) delivered_measured: u64,
    /// Send-to-receive latencies of the measured deliveries, microseconds.
    pub(crate) e2e_latency_us: Vec<u64>,
    /// Messages seen twice or out of order.
    pub(crate) duplicates_or_reordered: u64,
    /// Receiver Ack requests (Tacit only).
    pub(crate) ack_requests: u64,
    /// Sends still unanswered when the device gave up.
    pub(crate) unanswered: u64,
    /// Refusals and unexpected answers, by description.
    pub(crate) errors: BTreeMap<String, u64>,
}

impl Tally {
    /// Counts one error.
    pub(crate) fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }

    /// Adds another device's counts and samples.
    pub(crate) fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.sent_measured += other.sent_measured;
        self.accepted += other.accepted;
        self.acked_measured += other.acked_measured;
        self.ack_latency_us.extend(other.ack_latency_us);
        self.received += other.received;
        self.delivered_measured += other.delivered_measured;
        self.e2e_latency_us.extend(other.e2e_latency_us);
        self.duplicates_or_reordered += other.duplicates_or_reordered;
        self.ack_requests += other.ack_requests;
        self.unanswered += other.unanswered;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// Running totals every device bumps as it goes, read by the progress line.
#[derive(Default)]
pub(crate) struct Live {
    /// Sends acknowledged so far (warm-up included).
    pub(crate) acked: AtomicU64,
    /// Messages delivered so far (warm-up included).
    pub(crate) delivered: AtomicU64,
}

impl Live {
    /// (acknowledged, delivered) so far.
    pub(crate) fn read(&self) -> (u64, u64) {
        (
            self.acked.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed),
        )
    }
}
