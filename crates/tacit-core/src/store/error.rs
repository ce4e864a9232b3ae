//! The store's error type. Messages never contain stored values or key material.

/// What went wrong with the local store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key does not open this store.
    #[error("the profile could not be unlocked: wrong passphrase or key file")]
    WrongKey,
    /// The database file was written by a newer Tacit.
    #[error("the local store has schema version {found}, newer than this Tacit knows ({known}); upgrade Tacit")]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// A stored value failed authentication or could not be decoded.
    #[error("the local store is damaged: {0}")]
    Corrupt(String),
    /// A key file problem (permissions, length, missing).
    #[error("{0}")]
    KeyFile(String),
    /// Passphrase key derivation failed.
    #[error("key derivation failed: {0}")]
    KeyDerivation(String),
    /// A value could not be (de)serialized.
    #[error("could not encode or decode a stored value: {0}")]
    Serialization(String),
    /// SQLite failed.
    #[error("local database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}
