//! Driving the load: senders pipeline sends, receivers take and acknowledge pushes, all count.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use rand::Rng;
use tacit_proto::v1::{self, client_frame::Body as Req, server_frame::Body as Resp, EnvelopeKind};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{frame, setup_pair, Conn};
use crate::{Args, Result};

/// Sending before measuring, so that pools, caches and NATS subscriptions are warm.
pub(crate) const WARMUP: Duration = Duration::from_secs(1);
/// Bytes of every fake MLS message.
pub(crate) const PAYLOAD_BYTES: usize = 200;
/// How long after the end of sending answers and deliveries are still awaited.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// How often a device loop wakes up without traffic to look at the clock.
const READ_TICK: Duration = Duration::from_millis(100);

/// The time line of one scenario.
#[derive(Clone, Copy)]
struct Clock {
    /// Payload timestamps count microseconds from here.
    base: Instant,
    /// Measuring starts here (after the warm-up).
    measure_from: Instant,
    /// Sending stops here.
    end: Instant,
}

impl Clock {
    fn measured(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.end
    }

    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_micros() as u64
    }
}

/// What a sender tells its receiver once it stopped.
#[derive(Default)]
struct PairShared {
    accepted: AtomicU64,
    sender_done: AtomicBool,
}

/// Counts and samples of one device, merged per scenario.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) sent: u64,
    pub(crate) accepted: u64,
    pub(crate) acked_measured: u64,
    pub(crate) ack_latency_us: Vec<u64>,
    pub(crate) received: u64,
    pub(crate) delivered_measured: u64,
    pub(crate) e2e_latency_us: Vec<u64>,
    pub(crate) duplicates_or_reordered: u64,
    pub(crate) ack_requests: u64,
    pub(crate) unanswered: u64,
    pub(crate) errors: BTreeMap<String, u64>,
}

impl Tally {
    fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
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

fn describe_error(e: &v1::Error) -> String {
    let code =
        v1::ErrorCode::try_from(e.code).map_or_else(|_| e.code.to_string(), |c| format!("{c:?}"));
    format!("{code}: {}", e.message)
}

/// Acknowledges pushed envelopes by highest seq, one Ack request in flight at a time.
#[derive(Default)]
struct Acker {
    highest_seen: u64,
    acked: u64,
    /// (request id, seq) of the Ack in flight.
    in_flight: Option<(u64, u64)>,
}

impl Acker {
    fn idle(&self) -> bool {
        self.in_flight.is_none() && self.acked >= self.highest_seen
    }

    /// The Ack to send now, if one is due and none is in flight.
    fn due(&mut self, conn: &mut Conn, tally: &mut Tally) -> Option<Message> {
        if self.in_flight.is_some() || self.highest_seen <= self.acked {
            return None;
        }
        let id = conn.take_id();
        self.in_flight = Some((id, self.highest_seen));
        tally.ack_requests += 1;
        Some(frame(
            id,
            Req::Ack(v1::Ack {
                up_to_seq: self.highest_seen,
            }),
        ))
    }

    /// Takes the answer to request `id` if it is the Ack in flight.
    fn answered(&mut self, id: u64, body: &Resp, tally: &mut Tally) -> bool {
        match self.in_flight {
            Some((ack_id, seq)) if ack_id == id => {
                self.in_flight = None;
                match body {
                    Resp::Done(_) => self.acked = self.acked.max(seq),
                    Resp::Error(e) => tally.error(format!("Ack: {}", describe_error(e))),
                    other => tally.error(format!("Ack: unexpected answer {other:?}")),
                }
                true
            }
            _ => false,
        }
    }
}

/// What a device does besides receiving and acknowledging.
struct Sending {
    group: Vec<u8>,
    window: usize,
}

/// Runs one device until its work is done (or the drain limit passed).
async fn run_device(
    mut conn: Conn,
    sending: Option<Sending>,
    clock: Clock,
    pair: Arc<PairShared>,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut acker = Acker::default();
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut payload = vec![0u8; PAYLOAD_BYTES];
    rand::thread_rng().fill(&mut payload[16..]);
    let mut last_counter = 0u64;
    let give_up = clock.end + DRAIN_LIMIT;
    loop {
        let now = Instant::now();
        if let Some(s) = &sending {
            if now < clock.end && in_flight.len() < s.window {
                while in_flight.len() < s.window {
                    tally.sent += 1;
                    let at = Instant::now();
                    payload[..8].copy_from_slice(&clock.micros(at).to_le_bytes());
                    payload[8..16].copy_from_slice(&tally.sent.to_le_bytes());
                    let id = conn.take_id();
                    let body = Req::SendMessage(v1::SendMessage {
                        group_id: s.group.clone(),
                        message: payload.clone(),
                    });
                    conn.ws.feed(frame(id, body)).await?;
                    in_flight.push_back((id, at));
                }
                conn.ws.flush().await?;
            }
        }
        let finished = match &sending {
            Some(_) => now >= clock.end && in_flight.is_empty() && acker.idle(),
            None => {
                pair.sender_done.load(Ordering::Acquire)
                    && tally.received >= pair.accepted.load(Ordering::Acquire)
                    && acker.idle()
            }
        };
        if finished || now >= give_up {
            tally.unanswered += in_flight.len() as u64;
            break;
        }
        if sending.is_some() && now >= clock.end && in_flight.is_empty() {
            pair.accepted.store(tally.accepted, Ordering::Release);
            pair.sender_done.store(true, Ordering::Release);
        }
        let Some(f) = conn.poll(READ_TICK).await? else {
            continue;
        };
        let at = Instant::now();
        match f.body {
            Some(Resp::Envelope(e)) => {
                acker.highest_seen = acker.highest_seen.max(e.seq);
                if e.kind == EnvelopeKind::Message as i32 && e.payload.len() >= 16 {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(&e.payload[..8]);
                    let sent_us = u64::from_le_bytes(word);
                    word.copy_from_slice(&e.payload[8..16]);
                    let counter = u64::from_le_bytes(word);
                    if counter <= last_counter {
                        tally.duplicates_or_reordered += 1;
                    } else {
                        last_counter = counter;
                        tally.received += 1;
                        if clock.measured(at) {
                            tally.delivered_measured += 1;
                            tally
                                .e2e_latency_us
                                .push(clock.micros(at).saturating_sub(sent_us));
                        }
                    }
                }
            }
            Some(Resp::QueueDrained(_)) | None => {}
            Some(body) => {
                if !acker.answered(f.request_id, &body, &mut tally) {
                    match in_flight.iter().position(|(id, _)| *id == f.request_id) {
                        Some(pos) => {
                            let sent = in_flight.remove(pos).map_or(at, |(_, t)| t);
                            match body {
                                Resp::MessageAccepted(_) => {
                                    tally.accepted += 1;
                                    if clock.measured(at) {
                                        tally.acked_measured += 1;
                                        tally
                                            .ack_latency_us
                                            .push(at.duration_since(sent).as_micros() as u64);
                                    }
                                }
                                Resp::Error(e) => {
                                    tally.error(format!("SendMessage: {}", describe_error(&e)))
                                }
                                other => tally.error(format!("SendMessage: unexpected {other:?}")),
                            }
                        }
                        None => tally.error(format!("unexpected frame {body:?}")),
                    }
                }
            }
        }
        if let Some(ack) = acker.due(&mut conn, &mut tally) {
            conn.ws.send(ack).await?;
        }
    }
    if sending.is_some() {
        pair.accepted.store(tally.accepted, Ordering::Release);
        pair.sender_done.store(true, Ordering::Release);
    }
    let _ = conn.ws.close(None).await;
    Ok(tally)
}

/// Sets up the pairs (split across the nodes when there are two), runs them, merges the counts.
pub(crate) async fn drive(urls: &[String], args: &Args) -> Result<Tally> {
    let mut setups = tokio::task::JoinSet::new();
    for i in 0..args.pairs {
        let sender_url = urls[i % urls.len()].clone();
        let receiver_url = urls[(i + 1) % urls.len()].clone();
        setups.spawn(setup_pair(i, sender_url, receiver_url));
    }
    let mut pairs = Vec::new();
    while let Some(pair) = setups.join_next().await {
        pairs.push(pair??);
    }
    let base = Instant::now();
    let clock = Clock {
        base,
        measure_from: base + WARMUP,
        end: base + WARMUP + Duration::from_secs(args.secs),
    };
    let mut devices = tokio::task::JoinSet::new();
    for (sender, receiver, group) in pairs {
        let shared = Arc::new(PairShared::default());
        let sending = Sending {
            group,
            window: args.window,
        };
        devices.spawn(run_device(sender, Some(sending), clock, shared.clone()));
        devices.spawn(run_device(receiver, None, clock, shared));
    }
    let mut tally = Tally::default();
    while let Some(done) = devices.join_next().await {
        tally.merge(done??);
    }
    Ok(tally)
}
