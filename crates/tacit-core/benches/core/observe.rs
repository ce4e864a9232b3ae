//! Seeing what one message wrote: the rows of a Tacit store file (read through a second SQLite
//! connection; values are sealed, so every rewrite of a row changes its bytes), the entries of
//! OpenMLS's memory storage, and the bytes the process handed to write(2).

use std::collections::HashMap;
use std::path::Path;

use crate::report::Writes;

/// Storage contents: stored key -> stored value.
pub type Contents = HashMap<Vec<u8>, Vec<u8>>;

/// Every row of a Tacit store file: `kv` rows keyed by namespace and hidden key, `log` rows
/// (message history) by id, `outbox` rows by id, `seen` rows (no value) by key.
pub fn tacit_rows(path: &Path) -> Contents {
    let conn = rusqlite::Connection::open(path).expect("observe store");
    let mut rows = Contents::new();
    let mut kv = conn.prepare("SELECT ns, k, v FROM kv").expect("query");
    let kv_rows = kv
        .query_map([], |r| {
            let ns: u8 = r.get(0)?;
            let mut key = vec![b'k', ns];
            key.extend(r.get::<_, Vec<u8>>(1)?);
            Ok((key, r.get::<_, Vec<u8>>(2)?))
        })
        .expect("query");
    rows.extend(kv_rows.map(|r| r.expect("row")));
    rows.extend(rows_by_id(&conn, "log", b'l'));
    // Store schema 4: the outbox and the device's counters, and the seen-markers.
    rows.extend(rows_by_id(&conn, "outbox", b'o'));
    let mut seen = conn.prepare("SELECT k FROM seen").expect("query");
    let seen_rows = seen
        .query_map([], |r| {
            let mut key = vec![b's'];
            key.extend(r.get::<_, Vec<u8>>(0)?);
            Ok((key, Vec::new()))
        })
        .expect("query");
    rows.extend(seen_rows.map(|r| r.expect("row")));
    rows
}

/// The rows of a table keyed by an integer id (the log, the outbox), each keyed by `prefix` and
/// the id, with its value.
fn rows_by_id(conn: &rusqlite::Connection, table: &str, prefix: u8) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut stmt = conn
        .prepare(&format!("SELECT id, v FROM {table}"))
        .expect("query");
    let rows = stmt
        .query_map([], |r| {
            let mut key = vec![prefix];
            key.extend(r.get::<_, i64>(0)?.to_be_bytes());
            Ok((key, r.get::<_, Vec<u8>>(1)?))
        })
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}

/// What a Tacit row is, as far as can be told from outside (keys are HMACs).
pub fn tacit_row_name(key: &[u8]) -> String {
    match key {
        [b'l', ..] => "history log".into(),
        [b'o', 0, 0, 0, 0, 0, 0, 0, 0] => "device counters".into(),
        [b'o', ..] => "outbox".into(),
        [b's', ..] => "seen-marker".into(),
        [b'k', 1, ..] => "meta".into(),
        [b'k', 3, ..] => "conversation".into(),
        [b'k', 4, ..] => "outbox".into(),
        [b'k', 5, ..] => "OpenMLS item".into(),
        [b'k', 6, ..] => "chunk of an OpenMLS item".into(),
        [b'k', 7, ..] => "bucket of recent digests".into(),
        _ => "other".into(),
    }
}

/// What an OpenMLS memory-storage entry is: its key starts with the item's label.
pub fn openmls_entry_name(key: &[u8]) -> String {
    let label: Vec<u8> = key
        .iter()
        .copied()
        .take_while(u8::is_ascii_alphabetic)
        .collect();
    String::from_utf8_lossy(&label).into_owned()
}

/// The rows that differ between `before` and `after`.
pub fn diff(
    before: &Contents,
    after: &Contents,
    name: fn(&[u8]) -> String,
    syscall_bytes: Option<u64>,
) -> Writes {
    let written: Vec<_> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .collect();
    let largest = written
        .iter()
        .max_by_key(|(_, v)| v.len())
        .map_or((0, "-".into()), |(k, v)| (v.len(), name(k)));
    Writes {
        rows: written.len(),
        deleted: before.keys().filter(|k| !after.contains_key(*k)).count(),
        bytes: written.iter().map(|(_, v)| v.len()).sum(),
        largest,
        syscall_bytes,
    }
}

/// Total bytes of the stored values.
pub fn at_rest(contents: &Contents) -> usize {
    contents.values().map(Vec::len).sum()
}

/// Bytes this process has handed to write(2) so far (`wchar` in /proc/self/io), if known.
pub fn bytes_written() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}
