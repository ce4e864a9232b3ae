//! `tacit demo`: an embedded server on SQLite and real clients (alice on two devices, bob and
//! carol) talking over loopback WebSockets, each step checked, ending with a scan of the server's
//! files for every plaintext sent.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tacit_client::profile::{KeyMode, Profile, Unlock};
use tacit_client::{Client, TlsOptions};
use tacit_core::{CoreConfig, Device, Event, HistoryEntry};

use crate::args::DemoArgs;
use crate::output::event_line;

struct Demo {
    failures: usize,
    plaintexts: Vec<String>,
}

impl Demo {
    fn step(&self, title: &str) {
        println!("\n== {title}");
    }

    fn check(&mut self, ok: bool, what: &str) {
        if ok {
            println!("   ok    {what}");
        } else {
            println!("   FAIL  {what}");
            self.failures += 1;
        }
    }

    async fn send(
        &mut self,
        who: &str,
        client: &mut Client,
        target: &str,
        text: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let (c, m) = client
            .send(target, text)
            .await
            .with_context(|| format!("{who} sending to {target}"))?;
        println!("   {who} -> {}: {text}", c.name);
        self.plaintexts.push(text.to_owned());
        Ok(m.message)
    }
}

fn show(who: &str, events: &[Event]) {
    for e in events {
        println!("   {who} sees  {}", event_line(e));
    }
}

fn got_text(events: &[Event], from: &str, text: &str) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::Message { sender, text: t, .. } if sender == from && t == text))
}

fn history_has(entries: &[HistoryEntry], text: &str) -> bool {
    entries.iter().any(|e| !e.system && e.text == text)
}

fn new_client(root: &Path, name: &str) -> anyhow::Result<Client> {
    let (_, store) = Profile::create(&root.join(name), KeyMode::KeyFile, &Unlock::None)?;
    Ok(Client::new(
        Device::open(store, CoreConfig::default())?,
        TlsOptions::default(),
    ))
}

async fn sync(who: &str, client: &mut Client) -> anyhow::Result<Vec<Event>> {
    let events = client
        .sync()
        .await
        .with_context(|| format!("{who} syncing"))?;
    show(who, &events);
    Ok(events)
}

/// Counts occurrences of each plaintext in every file under `dir` (database, WAL, journal).
pub fn scan_for_plaintext(dir: &Path, plaintexts: &[String]) -> anyhow::Result<(usize, usize)> {
    let mut found = 0;
    let mut files = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            // SQLite may remove its WAL and shared-memory files at any moment.
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            files += 1;
            for p in plaintexts {
                let needle = p.as_bytes();
                found += bytes.windows(needle.len()).filter(|w| *w == needle).count();
            }
        }
    }
    Ok((found, files))
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let root = tempfile::Builder::new().prefix("tacit-demo-").tempdir()?;
    let server_dir = root.path().join("server");
    let config = tacit_server::ServerConfig::new(&server_dir, "127.0.0.1:0".parse()?);
    let server = tacit_server::start(config).await?;
    let url = server.url();
    let mut demo = Demo {
        failures: 0,
        plaintexts: Vec::new(),
    };
    println!(
        "Tacit demo: server on {url} (SQLite in {})",
        server_dir.display()
    );

    let result = script(&mut demo, root.path(), &url).await;
    if let Err(e) = &result {
        println!("\n   FAIL  the demo stopped: {e:#}");
        demo.failures += 1;
    }

    demo.step("Audit: search the server's files for every plaintext sent");
    // Once while the server runs (database, WAL and shared-memory files as they are), and once
    // after it shut down and checkpointed the WAL into the database.
    let (found_live, files_live) = scan_for_plaintext(&server_dir, &demo.plaintexts)?;
    server.shutdown().await;
    let (found_after, files_after) = scan_for_plaintext(&server_dir, &demo.plaintexts)?;
    let found = found_live + found_after;
    println!(
        "   scanned {files_live} files while running and {files_after} after shutdown (database, WAL, journal) for {} plaintexts",
        demo.plaintexts.len()
    );
    println!("   sent messages found in the clear on the server: {found}");
    demo.check(
        found == 0 && files_live > 0,
        "the server stored no plaintext",
    );

    if args.keep {
        let kept = root.keep();
        println!("\nData kept in {}", kept.display());
    }
    if demo.failures == 0 {
        println!("\nAll steps checked out.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\n{} step(s) failed.", demo.failures);
        Ok(ExitCode::FAILURE)
    }
}

async fn script(demo: &mut Demo, root: &Path, url: &str) -> anyhow::Result<()> {
    demo.step(
        "Accounts: alice, bob and carol register (identity key + first device + KeyPackages)",
    );
    let mut alice = new_client(root, "alice-laptop")?;
    let mut bob = new_client(root, "bob")?;
    let mut carol = new_client(root, "carol")?;
    alice.create_account("alice", url).await?;
    bob.create_account("bob", url).await?;
    carol.create_account("carol", url).await?;
    demo.check(true, "alice, bob and carol registered");

    demo.step("alice links a second device (one-time code, SPAKE2 over the server's blind relay)");
    let mut alice_phone = new_client(root, "alice-phone")?;
    let (code_tx, code_rx) = tokio::sync::oneshot::channel::<String>();
    let link = alice.link_device(
        move |code| {
            println!("   alice-laptop shows code {code}");
            let _ = code_tx.send(code.to_owned());
        },
        Duration::from_secs(60),
    );
    let join = async {
        let code = code_rx.await.context("no code")?;
        alice_phone
            .join_device(&code, url, Duration::from_secs(60))
            .await
            .map_err(anyhow::Error::from)
    };
    let (linked, joined) = tokio::join!(link, join);
    let (linked, joined) = (linked?, joined?);
    println!("   alice-laptop certified {linked}; alice-phone is {joined}");
    let devices = alice.devices().await?;
    demo.check(
        devices.len() == 2 && linked == joined,
        "alice has two certified devices",
    );

    demo.step("1:1: alice and bob chat; both of alice's devices see the conversation");
    demo.send(
        "alice-laptop",
        &mut alice,
        "bob",
        "Hi Bob! Lunch on Friday?",
    )
    .await?;
    let ev = sync("bob", &mut bob).await?;
    demo.check(
        got_text(&ev, "alice", "Hi Bob! Lunch on Friday?"),
        "bob decrypted alice's message",
    );
    demo.send("bob", &mut bob, "alice", "Friday works. The usual place?")
        .await?;
    let ev = sync("alice-laptop", &mut alice).await?;
    demo.check(
        got_text(&ev, "bob", "Friday works. The usual place?"),
        "alice-laptop decrypted bob's reply",
    );
    let ev = sync("alice-phone", &mut alice_phone).await?;
    demo.check(
        got_text(&ev, "bob", "Friday works. The usual place?"),
        "alice-phone decrypted bob's reply",
    );
    demo.check(
        got_text(&ev, "alice", "Hi Bob! Lunch on Friday?"),
        "alice-phone sees what alice-laptop sent",
    );
    demo.send(
        "alice-phone",
        &mut alice_phone,
        "bob",
        "Yes, 12:30. (from my phone)",
    )
    .await?;
    let ev = sync("bob", &mut bob).await?;
    demo.check(
        got_text(&ev, "alice", "Yes, 12:30. (from my phone)"),
        "bob got the message from alice's phone",
    );
    let ev = sync("alice-laptop", &mut alice).await?;
    demo.check(
        got_text(&ev, "alice", "Yes, 12:30. (from my phone)"),
        "alice-laptop sees what alice-phone sent",
    );

    demo.step("Group: alice creates book-club with bob and carol");
    alice
        .create_group("book-club", &["bob".into(), "carol".into()])
        .await?;
    println!("   alice-laptop created book-club");
    demo.send(
        "alice-laptop",
        &mut alice,
        "book-club",
        "Welcome to the book club! First pick: Dune.",
    )
    .await?;
    let ev_b = sync("bob", &mut bob).await?;
    let ev_c = sync("carol", &mut carol).await?;
    demo.check(
        got_text(
            &ev_b,
            "alice",
            "Welcome to the book club! First pick: Dune.",
        ),
        "bob reads the group",
    );
    demo.check(
        got_text(
            &ev_c,
            "alice",
            "Welcome to the book club! First pick: Dune.",
        ),
        "carol reads the group",
    );
    demo.send(
        "carol",
        &mut carol,
        "book-club",
        "Love it, I'm halfway through already.",
    )
    .await?;
    demo.send("bob", &mut bob, "book-club", "Ordering it today.")
        .await?;
    let ev = sync("alice-laptop", &mut alice).await?;
    demo.check(
        got_text(&ev, "carol", "Love it, I'm halfway through already.")
            && got_text(&ev, "bob", "Ordering it today."),
        "alice reads both replies",
    );
    let ev = sync("alice-phone", &mut alice_phone).await?;
    demo.check(
        got_text(&ev, "bob", "Ordering it today."),
        "alice-phone reads the group too",
    );
    sync("bob", &mut bob).await?;
    sync("carol", &mut carol).await?;

    demo.step("alice removes carol; carol can no longer decrypt what follows");
    let gid = alice
        .device()
        .find_conversation("book-club")?
        .context("book-club missing")?
        .group_id;
    alice.remove_members(&gid, &["carol".into()]).await?;
    println!("   alice-laptop removed carol");
    let ev = sync("carol", &mut carol).await?;
    demo.check(
        ev.iter()
            .any(|e| matches!(e, Event::RemovedFromConversation { .. })),
        "carol learns she was removed",
    );
    let secret = demo
        .send(
            "alice-laptop",
            &mut alice,
            "book-club",
            "Surprise party for Carol on Saturday!",
        )
        .await?;
    let ev = sync("bob", &mut bob).await?;
    demo.check(
        got_text(&ev, "alice", "Surprise party for Carol on Saturday!"),
        "bob still reads the group",
    );
    let ev = sync("carol", &mut carol).await?;
    demo.check(
        !got_text(&ev, "alice", "Surprise party for Carol on Saturday!"),
        "nothing reaches carol",
    );
    let probe = carol.device().probe_decrypt(&gid, &secret);
    match &probe {
        Ok(text) => println!("   carol decrypted: {text}"),
        Err(e) => println!("   carol tries the ciphertext herself: {e}"),
    }
    demo.check(
        probe.is_err(),
        "carol cannot decrypt the ciphertext even when handed it",
    );
    let carol_history = carol.device().history(&gid)?;
    demo.check(
        !history_has(&carol_history, "Surprise party for Carol on Saturday!"),
        "carol's history ends at her removal",
    );

    demo.step("Safety numbers: alice and bob compare");
    let a = alice.safety_number("bob").await?;
    let b = bob.safety_number("alice").await?;
    println!("   alice sees {}\n   bob   sees {}", a.digits, b.digits);
    demo.check(a == b, "both compute the same safety number");
    Ok(())
}
