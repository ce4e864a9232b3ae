//! PostgreSQL-only behaviour: migrations, lost connections, TLS. The behaviour shared with
//! SQLite is in the conformance suite (`store/tests.rs`).
#![allow(clippy::unwrap_used)]
use super::*;
use crate::testing::TestDatabase;

#[test]
fn a_database_newer_than_this_build_is_refused() {
    let Some(db) = TestDatabase::create_or_skip("PostgreSQL schema version") else {
        return;
    };
    drop(PgStore::open(&db.url, &PgOptions::default()).unwrap());
    let newest = MIGRATIONS.len() as i64;
    let url = db.url.clone();
    std::thread::spawn(move || {
        let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        c.execute(
            "INSERT INTO tacit_schema (version, name, applied_ms) VALUES ($1, 'from the future', 0)",
            &[&(newest + 1)],
        )
        .unwrap();
    })
    .join()
    .unwrap();
    let err = PgStore::open(&db.url, &PgOptions::default()).err().unwrap();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    assert!(err.to_string().contains("upgrade the server"), "{err}");
}

#[test]
fn nodes_starting_together_migrate_once() {
    let Some(db) = TestDatabase::create_or_skip("concurrent PostgreSQL migrations") else {
        return;
    };
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            std::thread::spawn(move || PgStore::open(&url, &PgOptions::default()).map(drop))
        })
        .collect();
    for t in opened {
        t.join().unwrap().unwrap();
    }
    let s = PgStore::open(&db.url, &PgOptions::default()).unwrap();
    let steps: i64 = s
        .conn()
        .unwrap()
        .query_one("SELECT COUNT(*) FROM tacit_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(steps, MIGRATIONS.len() as i64);
}

#[test]
fn a_database_restart_is_survived_without_reopening_the_store() {
    let Some(db) = TestDatabase::create_or_skip("PostgreSQL restart") else {
        return;
    };
    let s = PgStore::open(&db.url, &PgOptions::default()).unwrap();
    let alice = s
        .create_account("alice", &[1; 32], 1, &[2; 32], b"c")
        .unwrap();
    // Several pooled connections, all killed from the server side as a restart would.
    let held: Vec<_> = (0..4).map(|_| s.conn().unwrap()).collect();
    drop(held);
    db.terminate_connections();
    // A connection that died is reported as unavailable, never as a database error...
    let mut dead = s.conn().unwrap();
    let err = dead.query_one("SELECT 1", &[]).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    drop(dead);
    // ...and the store itself goes on at once: dead connections are replaced, reads and
    // writes succeed, nothing acknowledged before is lost.
    assert_eq!(s.device("alice", 1).unwrap().unwrap().key, alice.key);
    db.terminate_connections();
    s.create_account("bob", &[3; 32], 2, &[4; 32], b"c")
        .unwrap();
    db.terminate_connections();
    assert_eq!(s.key_package_stock(alice.key).unwrap(), (0, false));
    assert!(s.user("bob").unwrap().is_some());
}

#[test]
fn an_unreachable_database_is_a_clear_unavailable_error() {
    let port = crate::testing::free_port();
    let err = PgStore::open(
        &format!("postgres://tacit:secret-password@127.0.0.1:{port}/none"),
        &PgOptions {
            max_connections: 1,
            connect_timeout_secs: 1,
            ca_certs_pem: None,
        },
    )
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(!err.to_string().contains("secret-password"), "{err}");
    let err = PgStore::open("not a url", &PgOptions::default())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("not a valid PostgreSQL URL"),
        "{err}"
    );
}

#[test]
fn tls_is_verified_when_the_url_requires_it() {
    let Some(db) = TestDatabase::create_or_skip("PostgreSQL TLS") else {
        return;
    };
    // The test server's certificate (if it speaks TLS at all) is not one the public roots
    // vouch for, and certainly not for 127.0.0.1: a required TLS connection must fail
    // rather than proceed unverified.
    let url = format!("{}?sslmode=require", db.url);
    let err = PgStore::open(
        &url,
        &PgOptions {
            max_connections: 1,
            connect_timeout_secs: 2,
            ca_certs_pem: None,
        },
    )
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
    // Without sslmode the same server is reachable (plain TCP on loopback).
    PgStore::open(&db.url, &PgOptions::default()).unwrap();
}
