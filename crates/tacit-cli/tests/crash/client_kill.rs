//! `tacit sync` killed at random moments while it works through a long queue (bob's device),
//! in a 1:1 with alice and a group with alice and carol.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tacit_client::profile::{KeyMode, Profile, Unlock};
use tacit_client::{Client, TlsOptions};
use tacit_core::{CoreConfig, Device, Event};

use crate::check::{check_history, outgoing, DeviceKey, Line};
use crate::common::{json_lines, ok};
use crate::knobs::{kills, Schedule};
use crate::server_process::ServerProcess;

/// Messages queued for bob before the first kill; after each run as many as it processed are
/// queued again (at least [`MIN_TOP_UP`]), so that every sync has a long way to go.
const BACKLOG: usize = 120;
const MIN_TOP_UP: usize = 5;

fn new_client(root: &Path, name: &str) -> Client {
    let (_, store) = Profile::create(&root.join(name), KeyMode::KeyFile, &Unlock::None).unwrap();
    Client::new(
        Device::open(store, CoreConfig::default()).unwrap(),
        TlsOptions::default(),
    )
}

/// bob's device, opened in this process while no `tacit` process uses it.
fn open_bob(root: &Path) -> Device {
    let (_, store) = Profile::open(&root.join("bob"), &Unlock::None).unwrap();
    Device::open(store, CoreConfig::default()).unwrap()
}

fn bob_history(bob: &Path, conversation: &str) -> Vec<Line> {
    json_lines(&ok(bob, &["history", conversation, "--json"]))
        .iter()
        .map(Line::from_json)
        .collect()
}

fn message_texts(json: &str) -> Vec<String> {
    json_lines(json)
        .into_iter()
        .filter(|e| e["event"] == "message")
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect()
}

fn texts_from<'e>(events: &'e [Event], from: &str) -> Vec<&'e str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { sender, text, .. } if sender == from => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// alice and carol send `count` more messages: alice in both conversations, carol in the group.
async fn queue(
    alice: &mut Client,
    carol: &mut Client,
    conversations: &[(Vec<u8>, String); 2],
    n: &mut usize,
    count: usize,
) {
    for _ in 0..count {
        *n += 1;
        let (who, client, c) = match *n % 3 {
            0 => ("alice", &mut *alice, 0),
            1 => ("alice", &mut *alice, 1),
            _ => ("carol", &mut *carol, 1),
        };
        let text = format!("{who} #{n}");
        if let Err(e) = client.send(&conversations[c].1, &text).await {
            // The server's per-device rate limit (50/s, bursts of 200 by default) may refuse a
            // send in these bursts; the message stays in the outbox and goes once there is room.
            assert!(e.to_string().contains("RateLimited"), "{e}");
            flush_when_allowed(client).await;
        }
    }
}

/// Sends what `client`'s outbox holds, waiting while the server says "slow down" (bounded).
async fn flush_when_allowed(client: &mut Client) {
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.connect().await.unwrap();
        match client.flush_outbox().await {
            Ok(()) => return,
            Err(e) if e.is_temporary() => continue,
            Err(e) => panic!("flushing the outbox failed: {e}"),
        }
    }
    panic!("the server kept refusing the outbox for 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_killed_at_random_moments_shows_every_message_once_in_order() {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(root.path());
    let url = server.url.clone();
    let mut schedule = Schedule::new("client crash");
    let bob_dir = root.path().join("bob");

    let mut alice = new_client(root.path(), "alice");
    alice.create_account("alice", &url).await.unwrap();
    let mut carol = new_client(root.path(), "carol");
    carol.create_account("carol", &url).await.unwrap();
    let mut bob = new_client(root.path(), "bob");
    bob.create_account("bob", &url).await.unwrap();
    let bob_key: DeviceKey = ("bob".into(), bob.device().device_id().unwrap());
    let (direct, _) = alice.send("bob", "hello bob").await.unwrap();
    let club = alice
        .create_group("club", &["bob".into(), "carol".into()])
        .await
        .unwrap();
    bob.sync().await.unwrap();
    carol.sync().await.unwrap();
    drop(bob); // from now on bob is the `tacit` binary
    let conversations = [
        (direct.group_id.clone(), direct.short_id()),
        (club.group_id.clone(), club.short_id()),
    ];

    // A long queue for bob, kept long before each kill.
    let mut n = 0;
    queue(&mut alice, &mut carol, &conversations, &mut n, BACKLOG).await;

    let kills = kills(5);
    let (mut killed, mut finished_first, mut runs) = (0u32, 0u32, 0u32);
    let mut progress = Vec::new();
    // Kills land at a random moment within the longest time a whole sync took (at first: a
    // guess); what bob processed is queued again, so every sync has about as much to do.
    let mut whole_sync: Option<Duration> = None;
    let mut position = open_bob(root.path()).last_seq().unwrap();
    while killed < kills {
        runs += 1;
        assert!(
            runs <= kills * 10 + 20,
            "only {killed} of {kills} syncs could be killed while still running in {runs} runs"
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_tacit"))
            .args(["sync", "--json"])
            .env("TACIT_PROFILE", &bob_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let spawned = Instant::now();
        let window = whole_sync.unwrap_or(Duration::from_millis(2500));
        let kill_at = spawned + schedule.millis(20, window.as_millis() as u64);
        let mut exited = None;
        while Instant::now() < kill_at {
            if let Some(status) = child.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match exited {
            Some(status) => {
                assert!(status.success(), "tacit sync failed: {status}");
                finished_first += 1;
                let took = spawned.elapsed().max(Duration::from_millis(40));
                whole_sync = Some(whole_sync.map_or(took, |w| w.max(took)));
            }
            None => {
                let _ = child.kill(); // SIGKILL
                let status = child.wait().unwrap();
                if status.success() {
                    finished_first += 1;
                } else {
                    killed += 1;
                }
            }
        }
        let now = open_bob(root.path()).last_seq().unwrap();
        progress.push(now);
        let processed = (now - position) as usize;
        position = now;
        let top_up = processed.clamp(MIN_TOP_UP, BACKLOG);
        queue(&mut alice, &mut carol, &conversations, &mut n, top_up).await;
    }
    // Let the last one finish.
    ok(&bob_dir, &["sync", "--json"]);

    // bob's history: from alice and carol exactly what they sent, once, in order.
    let alice_key: DeviceKey = ("alice".into(), alice.device().device_id().unwrap());
    let carol_key: DeviceKey = ("carol".into(), carol.device().device_id().unwrap());
    let sent_by = |client: &mut Client, c: usize| -> Vec<String> {
        let history: Vec<Line> = client
            .device()
            .history(&conversations[c].0)
            .unwrap()
            .iter()
            .map(Line::from)
            .collect();
        outgoing(&history)
    };
    let sent = |alice: &mut Client, carol: &mut Client| {
        let mut sent: [BTreeMap<DeviceKey, Vec<String>>; 2] = Default::default();
        sent[0].insert(alice_key.clone(), sent_by(alice, 0));
        sent[1].insert(alice_key.clone(), sent_by(alice, 1));
        sent[1].insert(carol_key.clone(), sent_by(carol, 1));
        sent
    };
    let expected = sent(&mut alice, &mut carol);
    let queued: usize = expected.iter().flat_map(|s| s.values()).map(Vec::len).sum();
    let acked: HashSet<String> = expected
        .iter()
        .flat_map(|s| s.values().flatten().cloned())
        .collect();
    let mut checked = 0;
    for (c, (_, id)) in conversations.iter().enumerate() {
        let what = format!("conversation {c}");
        checked += check_history(
            "bob",
            &what,
            &bob_history(&bob_dir, id),
            &expected[c],
            &acked,
        );
    }

    // bob still sends and receives in both conversations.
    for (c, (_, id)) in conversations.iter().enumerate() {
        ok(&bob_dir, &["send", id, &format!("bob still talks in {c}")]);
    }
    assert_eq!(
        texts_from(&alice.sync().await.unwrap(), "bob"),
        vec!["bob still talks in 0", "bob still talks in 1"]
    );
    assert_eq!(
        texts_from(&carol.sync().await.unwrap(), "bob"),
        vec!["bob still talks in 1"]
    );
    alice
        .send(&conversations[0].1, "alice after 0")
        .await
        .unwrap();
    alice
        .send(&conversations[1].1, "alice after 1")
        .await
        .unwrap();
    carol
        .send(&conversations[1].1, "carol after 1")
        .await
        .unwrap();
    assert_eq!(
        message_texts(&ok(&bob_dir, &["sync", "--json"])),
        vec!["alice after 0", "alice after 1", "carol after 1"],
        "bob's sync shows the new messages, and only them"
    );
    let expected = sent(&mut alice, &mut carol);
    let acked: HashSet<String> = expected
        .iter()
        .flat_map(|s| s.values().flatten().cloned())
        .collect();
    for (c, (_, id)) in conversations.iter().enumerate() {
        let what = format!("conversation {c}");
        let history = bob_history(&bob_dir, id);
        check_history("bob", &what, &history, &expected[c], &acked);
        let mine = outgoing(&history);
        assert_eq!(mine, vec![format!("bob still talks in {c}")], "{bob_key:?}");
    }
    let redeliveries = open_bob(root.path()).redeliveries_dropped().unwrap();
    println!(
        "crash figures: test=client_kill kills={killed} runs={runs} finished_before_kill={finished_first} \
         messages_queued={queued} deliveries_checked={checked} redeliveries_dropped={} resent_copies_dropped={} \
         queue_position_after_each_kill={progress:?} seconds={:.1}",
        redeliveries.total,
        redeliveries.resent_copies,
        started.elapsed().as_secs_f64()
    );
    drop(server);
}
