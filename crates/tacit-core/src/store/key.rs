//! The store key: from a passphrase (Argon2id) or a key file (0600).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::StoreError;

/// Argon2id memory cost, in KiB (19 MiB: the OWASP minimum recommendation).
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
/// Argon2id passes over memory.
pub const ARGON2_ITERATIONS: u32 = 2;
/// Argon2id lanes.
pub const ARGON2_PARALLELISM: u32 = 1;
/// Size of a store key, in bytes.
pub const STORE_KEY_BYTES: usize = 32;

/// The 32-byte secret that unlocks a local store. Wiped on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StoreKey([u8; STORE_KEY_BYTES]);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey([redacted])")
    }
}

impl StoreKey {
    /// Derives the key from a passphrase and the profile's random salt with Argon2id
    /// (m = 19 MiB, t = 2, p = 1).
    pub fn derive_from_passphrase(
        passphrase: &[u8],
        salt: &[u8; 16],
    ) -> Result<StoreKey, StoreError> {
        let params = Params::new(
            ARGON2_MEMORY_KIB,
            ARGON2_ITERATIONS,
            ARGON2_PARALLELISM,
            Some(STORE_KEY_BYTES),
        )
        .map_err(|e| StoreError::KeyDerivation(e.to_string()))?;
        let mut out = [0u8; STORE_KEY_BYTES];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase, salt, &mut out)
            .map_err(|e| StoreError::KeyDerivation(e.to_string()))?;
        Ok(StoreKey(out))
    }

    /// A fresh random key from the operating system.
    pub fn generate() -> StoreKey {
        let mut out = [0u8; STORE_KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut out);
        StoreKey(out)
    }

    /// Writes the key to a new file readable only by its owner (mode 0600). Refuses to overwrite.
    pub fn write_key_file(&self, path: &Path) -> Result<(), StoreError> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                StoreError::KeyFile(format!("cannot create key file {}: {e}", path.display()))
            })?;
        file.write_all(&self.0)
            .and_then(|_| file.sync_all())
            .map_err(|e| {
                StoreError::KeyFile(format!("cannot write key file {}: {e}", path.display()))
            })
    }

    /// Reads a key file, refusing one that group or others may read.
    pub fn read_key_file(path: &Path) -> Result<StoreKey, StoreError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            StoreError::KeyFile(format!("cannot read key file {}: {e}", path.display()))
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(StoreError::KeyFile(format!(
                "key file {} is readable by others; run `chmod 600 {}`",
                path.display(),
                path.display()
            )));
        }
        let mut bytes = std::fs::read(path).map_err(|e| {
            StoreError::KeyFile(format!("cannot read key file {}: {e}", path.display()))
        })?;
        let result = <[u8; STORE_KEY_BYTES]>::try_from(bytes.as_slice())
            .map(StoreKey)
            .map_err(|_| {
                StoreError::KeyFile(format!(
                    "key file {} is not a Tacit key file (wrong length)",
                    path.display()
                ))
            });
        bytes.zeroize();
        result
    }

    pub(crate) fn as_bytes(&self) -> &[u8; STORE_KEY_BYTES] {
        &self.0
    }
}
