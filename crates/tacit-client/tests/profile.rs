//! The profile file (`profile.json`) as an encoder/decoder pair: what `Profile::create` writes,
//! `Profile::open` reads back (the same key mode, the same store); and whatever bytes are found
//! there instead — a damaged or hostile file — give a clear error, never a panic.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tacit_client::profile::{KeyMode, Profile, Unlock};
use tacit_client::ClientError;
use tacit_core::store::Namespace;

#[test]
fn key_file_profiles_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let (created, mut store) = Profile::create(&path, KeyMode::KeyFile, &Unlock::None).unwrap();
    assert_eq!(created.key_mode, KeyMode::KeyFile);
    store
        .transaction(|tx| tx.put(Namespace::Meta, b"probe", b"kept"))
        .unwrap();
    drop(store);
    assert_eq!(Profile::key_mode(&path).unwrap(), KeyMode::KeyFile);
    let (opened, mut store) = Profile::open(&path, &Unlock::None).unwrap();
    assert_eq!(opened.key_mode, KeyMode::KeyFile);
    let value = store
        .transaction(|tx| tx.get(Namespace::Meta, b"probe"))
        .unwrap();
    assert_eq!(value.as_deref(), Some(&b"kept"[..]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn damaged_profile_files_are_refused_clearly(
        contents in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            // Nearly right JSON reaches further into the reader.
            (prop_oneof![Just("passphrase"), Just("key_file"), Just("other")], ".{0,40}", any::<u32>())
                .prop_map(|(mode, salt, version)| format!(
                    r#"{{"version":{version},"key_mode":"{mode}","salt_hex":"{salt}"}}"#
                ).into_bytes()),
        ]
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("profile.json"), &contents).unwrap();
        // A wrong passphrase is never tried: a damaged salt or key file is refused first.
        let unlock = Unlock::Passphrase(zeroize::Zeroizing::new("not tried".into()));
        match Profile::open(&path, &unlock) {
            Err(ClientError::Profile(message)) => prop_assert!(!message.is_empty()),
            Err(ClientError::Core(_)) => {} // e.g. the key file it names is missing
            Err(other) => return Err(TestCaseError::fail(format!("unexpected error {other}"))),
            Ok(_) => return Err(TestCaseError::fail("opened a profile from a damaged file")),
        }
    }
}
