//! A device profile directory: the encrypted local store and how its key is obtained.
//!
//! Two ways to unlock, chosen when the profile is created and recorded in `profile.json`:
//! - **passphrase** (default): the store key is derived with Argon2id from a passphrase and a
//!   random salt kept in `profile.json`; the passphrase is never stored.
//! - **key file**: a random 32-byte key in `store.key`, created with mode 0600 and refused if
//!   group or others can read it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tacit_core::store::{LocalStore, StoreKey};
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};

const PROFILE_FILE: &str = "profile.json";
const STORE_FILE: &str = "store.db";
const KEY_FILE: &str = "store.key";

/// How the store key is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// Argon2id from a passphrase.
    Passphrase,
    /// A key file with 0600 permissions.
    KeyFile,
}

#[derive(Serialize, Deserialize)]
struct ProfileFile {
    version: u32,
    key_mode: KeyMode,
    salt_hex: Option<String>,
}

/// Where the passphrase comes from when one is needed.
pub enum Unlock {
    /// The passphrase itself (from `TACIT_PASSPHRASE` or a prompt).
    Passphrase(Zeroizing<String>),
    /// No passphrase available (key-file profiles need none).
    None,
}

/// An opened profile directory.
pub struct Profile {
    /// The directory.
    pub dir: PathBuf,
    /// How it is unlocked.
    pub key_mode: KeyMode,
}

impl Profile {
    /// Whether `dir` already holds a profile.
    pub fn exists(dir: &Path) -> bool {
        dir.join(PROFILE_FILE).exists()
    }

    /// The key mode of an existing profile.
    pub fn key_mode(dir: &Path) -> Result<KeyMode> {
        Ok(read_profile(dir)?.key_mode)
    }

    /// Creates a profile directory and its store. With [`KeyMode::Passphrase`] the passphrase is
    /// required.
    pub fn create(dir: &Path, mode: KeyMode, unlock: &Unlock) -> Result<(Profile, LocalStore)> {
        if Self::exists(dir) {
            return Err(ClientError::Profile(format!(
                "{} already holds a profile; pick another --profile directory",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        restrict_dir(dir)?;
        let (key, salt_hex) = match mode {
            KeyMode::Passphrase => {
                let Unlock::Passphrase(p) = unlock else {
                    return Err(ClientError::Profile("a passphrase is needed: set TACIT_PASSPHRASE, run in a terminal to be asked, or use --key-file".into()));
                };
                let salt: [u8; 16] = rand::random();
                (
                    StoreKey::derive_from_passphrase(p.as_bytes(), &salt).map_err(core)?,
                    Some(hex::encode(salt)),
                )
            }
            KeyMode::KeyFile => {
                let key = StoreKey::generate();
                key.write_key_file(&dir.join(KEY_FILE)).map_err(core)?;
                (key, None)
            }
        };
        let store = LocalStore::open(&dir.join(STORE_FILE), &key).map_err(core)?;
        let file = ProfileFile {
            version: 1,
            key_mode: mode,
            salt_hex,
        };
        let json =
            serde_json::to_vec_pretty(&file).map_err(|e| ClientError::Profile(e.to_string()))?;
        std::fs::write(dir.join(PROFILE_FILE), json).map_err(|e| io(dir, e))?;
        Ok((
            Profile {
                dir: dir.to_owned(),
                key_mode: mode,
            },
            store,
        ))
    }

    /// Opens an existing profile.
    pub fn open(dir: &Path, unlock: &Unlock) -> Result<(Profile, LocalStore)> {
        let file = read_profile(dir)?;
        let key = match file.key_mode {
            KeyMode::Passphrase => {
                let Unlock::Passphrase(p) = unlock else {
                    return Err(ClientError::Profile("this profile is locked with a passphrase: set TACIT_PASSPHRASE or run in a terminal to be asked".into()));
                };
                let salt = file
                    .salt_hex
                    .as_deref()
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|s| <[u8; 16]>::try_from(s.as_slice()).ok())
                    .ok_or_else(|| {
                        ClientError::Profile(format!(
                            "{} is damaged (salt)",
                            dir.join(PROFILE_FILE).display()
                        ))
                    })?;
                StoreKey::derive_from_passphrase(p.as_bytes(), &salt).map_err(core)?
            }
            KeyMode::KeyFile => StoreKey::read_key_file(&dir.join(KEY_FILE)).map_err(core)?,
        };
        let store = LocalStore::open(&dir.join(STORE_FILE), &key).map_err(core)?;
        Ok((
            Profile {
                dir: dir.to_owned(),
                key_mode: file.key_mode,
            },
            store,
        ))
    }
}

fn read_profile(dir: &Path) -> Result<ProfileFile> {
    let path = dir.join(PROFILE_FILE);
    let bytes = std::fs::read(&path).map_err(|_| {
        ClientError::Profile(format!(
            "no profile in {}: run `tacit account create` or `tacit device join` first (or pass --profile)",
            dir.display()
        ))
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ClientError::Profile(format!("{} is damaged: {e}", path.display())))
}

fn restrict_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| io(dir, e))
}

fn io(path: &Path, e: std::io::Error) -> ClientError {
    ClientError::Profile(format!("{}: {e}", path.display()))
}

fn core(e: tacit_core::store::StoreError) -> ClientError {
    ClientError::Core(e.into())
}
