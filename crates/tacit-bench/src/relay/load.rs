//! Driving the load: each sender sends to its receiver (paced, or keeping a window in flight),
//! each receiver takes and (for Tacit) acknowledges deliveries, all count.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use rand::Rng;

use super::client::Conn;
use super::e2e::{Opened, ReceiverEnd, SenderEnd};
use super::tally::{Live, Tally};
use super::wire::{Incoming, Outcome, Wire};
use crate::error::Result;

/// Sending before measuring, so that connections, caches and the allocator are warm.
pub const WARMUP: Duration = Duration::from_secs(1);
/// Bytes of every message: send time (8), per-sender counter (8), random filler.
pub const PAYLOAD_BYTES: usize = 200;
/// How long after the end of sending answers and deliveries are still awaited.
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// How often a device loop wakes up without traffic to look at the clock.
const READ_TICK: Duration = Duration::from_millis(50);

/// The time line of one scenario.
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    /// Payload timestamps count microseconds from here; sending starts here.
    pub(crate) base: Instant,
    /// Measuring starts here (after the warm-up).
    pub(crate) measure_from: Instant,
    /// Sending stops here.
    pub(crate) end: Instant,
}

impl Clock {
    /// A clock starting now: warm-up, then `secs` measured seconds.
    pub(crate) fn starting_now(secs: u64) -> Clock {
        let base = Instant::now();
        Clock {
            base,
            measure_from: base + WARMUP,
            end: base + WARMUP + Duration::from_secs(secs),
        }
    }

    fn measured(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.end
    }

    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_micros() as u64
    }
}

/// How each sender sends.
#[derive(Clone, Copy)]
pub(crate) struct Pace {
    /// Most sends in flight.
    pub(crate) window: usize,
    /// Time between two sends of one sender; `None` at saturation.
    pub(crate) interval: Option<Duration>,
}

/// What a sender tells its receiver once it stopped.
#[derive(Default)]
pub(crate) struct PairShared {
    accepted: AtomicU64,
    sender_done: AtomicBool,
}

impl PairShared {
    fn finish(&self, accepted: u64) {
        self.accepted.store(accepted, Ordering::Release);
        self.sender_done.store(true, Ordering::Release);
    }
}

/// Runs one sender until the end of sending and its last answer (or the drain limit).
pub(crate) async fn run_sender(
    mut conn: Conn,
    wire: Wire,
    mut sealer: SenderEnd,
    pace: Pace,
    clock: Clock,
    pair: Arc<PairShared>,
    live: Arc<Live>,
) -> Result<Tally> {
    let mut tally = Tally::default();
    // (request id, send time, outbox entry to forget once accepted)
    let mut in_flight: VecDeque<(u64, Instant, Option<u64>)> = VecDeque::new();
    let mut payload = vec![0u8; PAYLOAD_BYTES];
    rand::thread_rng().fill(&mut payload[16..]);
    // Paced senders start at random offsets within one interval, not all at once.
    let mut next_at = match pace.interval {
        Some(i) => clock.base + i.mul_f64(rand::thread_rng().gen::<f64>()),
        None => clock.base,
    };
    let give_up = clock.end + DRAIN_LIMIT;
    loop {
        let now = Instant::now();
        if now < clock.end {
            let mut fed = false;
            while in_flight.len() < pace.window {
                if let Some(interval) = pace.interval {
                    if next_at > now {
                        break;
                    }
                    next_at += interval;
                }
                tally.sent += 1;
                let at = Instant::now();
                if clock.measured(at) {
                    tally.sent_measured += 1;
                }
                payload[..8].copy_from_slice(&clock.micros(at).to_le_bytes());
                payload[8..16].copy_from_slice(&tally.sent.to_le_bytes());
                let sealed = sealer.seal(&payload).await?;
                let id = conn.take_id();
                conn.ws.feed(wire.send_frame(id, &sealed.bytes)).await?;
                in_flight.push_back((id, at, sealed.outbox_id));
                fed = true;
            }
            if fed {
                conn.ws.flush().await?;
            }
        }
        if (now >= clock.end && in_flight.is_empty()) || now >= give_up {
            break;
        }
        let wait = match pace.interval {
            Some(_) if now < clock.end && in_flight.len() < pace.window => {
                next_at.saturating_duration_since(now).min(READ_TICK)
            }
            _ => READ_TICK,
        };
        let Some(bytes) = conn.poll(wait).await? else {
            continue;
        };
        let Incoming::Answer { id, outcome } = wire.decode(&bytes, false)? else {
            continue;
        };
        let at = Instant::now();
        let Some(pos) = in_flight.iter().position(|(i, _, _)| *i == id) else {
            tally.error(format!("an answer to unknown request {id}"));
            continue;
        };
        let (sent, outbox_id) = in_flight.remove(pos).map_or((at, None), |(_, t, o)| (t, o));
        match outcome {
            Outcome::Accepted => {
                sealer.accepted(outbox_id).await?;
                tally.accepted += 1;
                live.acked.fetch_add(1, Ordering::Relaxed);
                if clock.measured(at) {
                    tally.acked_measured += 1;
                    tally
                        .ack_latency_us
                        .push(at.duration_since(sent).as_micros() as u64);
                }
            }
            Outcome::Done => tally.error("SendMessage: answered Done".into()),
            Outcome::Failed(what) => tally.error(format!("SendMessage: {what}")),
        }
    }
    tally.unanswered += in_flight.len() as u64;
    pair.finish(tally.accepted);
    let _ = conn.ws.close(None).await;
    Ok(tally)
}

/// Runs one receiver until its sender stopped and everything accepted arrived and was
/// acknowledged (or the drain limit passed).
pub(crate) async fn run_receiver(
    mut conn: Conn,
    wire: Wire,
    mut opener: ReceiverEnd,
    clock: Clock,
    pair: Arc<PairShared>,
    live: Arc<Live>,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut last_counter = 0u64;
    // Acknowledgment by highest seq, one Ack request in flight at a time.
    let mut highest_seen = 0u64;
    let mut acked = 0u64;
    let mut ack_in_flight: Option<(u64, u64)> = None;
    let give_up = clock.end + DRAIN_LIMIT;
    loop {
        let acks_idle = ack_in_flight.is_none() && acked >= highest_seen;
        let finished = pair.sender_done.load(Ordering::Acquire)
            && tally.received >= pair.accepted.load(Ordering::Acquire)
            && acks_idle;
        if finished || Instant::now() >= give_up {
            break;
        }
        let Some(bytes) = conn.poll(READ_TICK).await? else {
            continue;
        };
        let at = Instant::now();
        match wire.decode(&bytes, true)? {
            Incoming::Delivery { seq, message } => {
                highest_seen = highest_seen.max(seq);
                let Some(m) = message else { continue };
                let m = match opener.open(seq, m).await? {
                    Opened::Payload(p) => p,
                    Opened::Nothing => continue,
                    Opened::Refused(why) => {
                        tally.error(format!("a delivery could not be opened: {why}"));
                        continue;
                    }
                };
                let at = if opener.is_opaque() {
                    at
                } else {
                    Instant::now()
                };
                let (Some(sent), Some(counter)) = (m.first_chunk::<8>(), m.get(8..16)) else {
                    tally.error("a delivery too short to be a bench message".into());
                    continue;
                };
                let sent_us = u64::from_le_bytes(*sent);
                let counter = counter
                    .first_chunk::<8>()
                    .map_or(0, |c| u64::from_le_bytes(*c));
                if counter <= last_counter {
                    tally.duplicates_or_reordered += 1;
                    continue;
                }
                last_counter = counter;
                tally.received += 1;
                live.delivered.fetch_add(1, Ordering::Relaxed);
                if clock.measured(at) {
                    tally.delivered_measured += 1;
                    tally
                        .e2e_latency_us
                        .push(clock.micros(at).saturating_sub(sent_us));
                }
            }
            Incoming::Answer { id, outcome } => match ack_in_flight {
                Some((ack_id, seq)) if ack_id == id => {
                    ack_in_flight = None;
                    match outcome {
                        Outcome::Done => acked = acked.max(seq),
                        Outcome::Accepted => tally.error("Ack: answered MessageAccepted".into()),
                        Outcome::Failed(what) => tally.error(format!("Ack: {what}")),
                    }
                }
                _ => tally.error(format!("an answer to unknown request {id}")),
            },
            Incoming::Ignored => {}
        }
        if wire.acknowledges() && ack_in_flight.is_none() && highest_seen > acked {
            let id = conn.take_id();
            if let Some(ack) = wire.ack_frame(id, highest_seen) {
                ack_in_flight = Some((id, highest_seen));
                tally.ack_requests += 1;
                conn.ws.send(ack).await?;
            }
        }
    }
    let _ = conn.ws.close(None).await;
    Ok(tally)
}
