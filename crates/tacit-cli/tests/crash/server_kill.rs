//! `tacit serve` killed at random moments while three users (alice with two devices, bob,
//! carol) keep talking in a 1:1 and a group conversation.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use tacit_client::profile::{KeyMode, Profile, Unlock};
use tacit_client::{Client, TlsOptions};
use tacit_core::{CoreConfig, Device, Event};

use crate::check::{check_events, check_history, no_refusals, outgoing, DeviceKey, Line};
use crate::knobs::{kills, Schedule};
use crate::server_process::ServerProcess;

/// Longest any one client operation may take before the test gives up.
const OP_LIMIT: Duration = Duration::from_secs(90);
/// How long the traffic pauses after a failed operation (the server is down or starting).
const PAUSE_AFTER_FAILURE: Duration = Duration::from_millis(20);

/// One device of the test, driven in this process through the client library.
struct Dev {
    name: &'static str,
    client: Client,
    key: DeviceKey,
    /// Indexes into the conversation list of the conversations it is in.
    conversations: Vec<usize>,
    /// Every event it was shown.
    events: Vec<Event>,
}

impl Dev {
    fn collect(&mut self) {
        self.events.extend(self.client.take_events());
    }

    fn history(&mut self, group_id: &[u8]) -> Vec<Line> {
        self.client
            .device()
            .history(group_id)
            .unwrap()
            .iter()
            .map(Line::from)
            .collect()
    }
}

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(OP_LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {OP_LIMIT:?}"))
}

fn new_client(root: &Path, name: &str) -> Client {
    let (_, store) = Profile::create(&root.join(name), KeyMode::KeyFile, &Unlock::None).unwrap();
    Client::new(
        Device::open(store, CoreConfig::default()).unwrap(),
        TlsOptions::default(),
    )
}

async fn account(root: &Path, url: &str, name: &'static str, handle: &str) -> Dev {
    let mut client = new_client(root, name);
    client.create_account(handle, url).await.unwrap();
    let key = (handle.to_owned(), client.device().device_id().unwrap());
    Dev {
        name,
        client,
        key,
        conversations: vec![],
        events: vec![],
    }
}

/// Syncs until it succeeds (the server may be starting again), bounded.
async fn sync_until_ok(d: &mut Dev) {
    let deadline = Instant::now() + OP_LIMIT;
    loop {
        let result = bounded("a sync", d.client.sync()).await;
        d.collect();
        match result {
            Ok(events) => {
                d.events.extend(events);
                return;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "{} cannot sync: {e}", d.name);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_at_random_moments_loses_and_repeats_nothing() {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(root.path());
    let url = server.url.clone();
    let mut schedule = Schedule::new("server crash");

    // alice (laptop and phone), bob, carol; a 1:1 alice-bob and a group of all three.
    let mut alice = account(root.path(), &url, "alice-laptop", "alice").await;
    let mut phone = new_client(root.path(), "alice-phone");
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let link = alice.client.link_device(
        move |c| {
            let _ = tx.send(c.to_owned());
        },
        Duration::from_secs(60),
    );
    let join = async {
        phone
            .join_device(&rx.await.unwrap(), &url, Duration::from_secs(60))
            .await
    };
    let (a, b) = tokio::join!(link, join);
    assert_eq!(a.unwrap(), b.unwrap());
    let phone_id = phone.device().device_id().unwrap();
    let phone = Dev {
        name: "alice-phone",
        client: phone,
        key: ("alice".into(), phone_id),
        conversations: vec![],
        events: vec![],
    };
    let bob = account(root.path(), &url, "bob", "bob").await;
    let carol = account(root.path(), &url, "carol", "carol").await;
    let mut devs = [alice, phone, bob, carol];
    let (direct, _) = devs[0].client.send("bob", "hello bob").await.unwrap();
    let club = devs[0]
        .client
        .create_group("club", &["bob".into(), "carol".into()])
        .await
        .unwrap();
    let conversations = [
        (direct.group_id.clone(), direct.short_id()),
        (club.group_id.clone(), club.short_id()),
    ];
    for d in devs.iter_mut() {
        sync_until_ok(d).await;
        d.conversations = if d.name == "carol" {
            vec![1]
        } else {
            vec![0, 1]
        };
    }

    // Traffic while another thread kills the server at random moments and starts it again.
    let kills = kills(4);
    let mut killer_schedule = Schedule::from_seed(schedule.next());
    let killer = std::thread::spawn(move || {
        for _ in 0..kills {
            std::thread::sleep(killer_schedule.millis(300, 1500));
            server.kill();
            std::thread::sleep(killer_schedule.millis(10, 300));
            server.restart();
        }
        server
    });
    let mut acked = HashSet::new();
    let (mut sends, mut failed_sends, mut syncs, mut failed_syncs) = (0u64, 0u64, 0u64, 0u64);
    let traffic_deadline = Instant::now() + Duration::from_secs(600);
    while !killer.is_finished() {
        assert!(
            Instant::now() < traffic_deadline,
            "the kills took longer than 10 minutes"
        );
        let d = &mut devs[schedule.below(4)];
        let c = d.conversations[schedule.below(d.conversations.len())];
        if schedule.below(4) < 3 {
            let text = format!("{} #{sends} in {}", d.name, c);
            sends += 1;
            let result = bounded("a send", d.client.send(&conversations[c].1, &text)).await;
            d.collect();
            match result {
                Ok(_) => {
                    acked.insert(text);
                }
                Err(_) => {
                    failed_sends += 1;
                    tokio::time::sleep(PAUSE_AFTER_FAILURE).await;
                }
            }
        } else {
            syncs += 1;
            let result = bounded("a sync", d.client.sync()).await;
            d.collect();
            match result {
                Ok(events) => d.events.extend(events),
                Err(_) => {
                    failed_syncs += 1;
                    tokio::time::sleep(PAUSE_AFTER_FAILURE).await;
                }
            }
        }
    }
    let _server = killer.join().expect("the killer thread failed");

    // The server stays up now: every outbox drains, every queue is received.
    for d in devs.iter_mut() {
        sync_until_ok(d).await;
        assert!(
            d.client.device().outbox().unwrap().is_empty(),
            "{}'s outbox did not drain",
            d.name
        );
    }
    for d in devs.iter_mut() {
        sync_until_ok(d).await;
    }

    // No conversation is broken: every member sends once more and every other member gets it.
    let mut last = Vec::new();
    for d in devs.iter_mut() {
        for &c in &d.conversations.clone() {
            let text = format!("{} still talks in {c}", d.name);
            bounded("a send", d.client.send(&conversations[c].1, &text))
                .await
                .unwrap_or_else(|e| panic!("{} cannot send in {c} after the kills: {e}", d.name));
            d.collect();
            acked.insert(text.clone());
            last.push((d.key.clone(), c, text));
        }
    }
    for d in devs.iter_mut() {
        sync_until_ok(d).await;
    }

    // Every device shows, from every other device, exactly what it sent, once, in order.
    let mut sent: [BTreeMap<DeviceKey, Vec<String>>; 2] = Default::default();
    let mut encrypted = 0;
    for d in devs.iter_mut() {
        for &c in &d.conversations.clone() {
            let mine = outgoing(&d.history(&conversations[c].0));
            encrypted += mine.len();
            sent[c].insert(d.key.clone(), mine);
        }
    }
    let mut checked = 0;
    let (mut redeliveries, mut resent_copies) = (0, 0);
    for d in devs.iter_mut() {
        no_refusals(d.name, &d.events);
        let dropped = d.client.device().redeliveries_dropped().unwrap();
        redeliveries += dropped.total;
        resent_copies += dropped.resent_copies;
        for &c in &d.conversations.clone() {
            let history = d.history(&conversations[c].0);
            let mut others = sent[c].clone();
            others.remove(&d.key);
            let what = format!("conversation {c}");
            checked += check_history(d.name, &what, &history, &others, &acked);
            check_events(d.name, &what, &conversations[c].1, &d.events, &history);
            for (from, lc, text) in &last {
                if *lc == c && *from != d.key {
                    assert!(
                        history.iter().any(|l| &l.text == text),
                        "{} did not get {text:?} after the kills",
                        d.name
                    );
                }
            }
        }
    }
    println!(
        "crash figures: test=server_kill kills={kills} sends={sends} failed_sends={failed_sends} \
         encrypted={encrypted} acknowledged={} syncs={syncs} failed_syncs={failed_syncs} \
         deliveries_checked={checked} redeliveries_dropped={redeliveries} resent_copies_dropped={resent_copies} seconds={:.1}",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
}
