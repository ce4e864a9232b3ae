//! How OpenMLS values are encoded in the store: a format byte, then postcard (compact binary)
//! or JSON; values of store schema version 1 are untagged JSON and still decode.

use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

use super::items::Item;
use super::mls_storage::MlsStorageError;
use super::StoreError;

/// The label of OpenMLS's join configuration (see [`format_of`]).
pub(super) const JOIN_CONFIG_LABEL: &[u8] = b"join_config";

type R<T> = Result<T, MlsStorageError>;

/// Format byte of a value encoded with postcard.
const POSTCARD: u8 = 1;
/// Format byte of a value encoded as JSON.
const JSON: u8 = 2;

pub(super) fn codec_error(e: impl std::fmt::Display) -> MlsStorageError {
    StoreError::Serialization(e.to_string()).into()
}

/// The format a label's values are written in. The join configuration's decoding relies on a
/// self-describing format (an untagged enum, for backward compatibility inside OpenMLS), so it
/// stays JSON; everything else is postcard.
pub(super) fn format_of(label: &[u8]) -> u8 {
    if label == JOIN_CONFIG_LABEL {
        JSON
    } else {
        POSTCARD
    }
}

/// A value's stored form: its format byte, then its encoding.
pub(super) fn encode<T: Serialize + ?Sized>(format: u8, value: &T) -> R<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(vec![format]);
    if format == JSON {
        serde_json::to_writer(&mut *out, value).map_err(codec_error)?;
        Ok(out)
    } else {
        let buffer = std::mem::take(&mut *out);
        postcard::to_extend(value, buffer)
            .map(Zeroizing::new)
            .map_err(codec_error)
    }
}

/// In builds with debug assertions (every test): checks that a postcard value decodes as a `T`
/// and encodes back to as many bytes, so that a type postcard cannot carry is caught by the
/// tests rather than when a profile is reopened. (Not to the same bytes: some OpenMLS values hold
/// hash maps, encoded in whatever order they iterate.)
pub(super) fn check_round_trip<T: Serialize + DeserializeOwned>(stored: &[u8]) -> R<()> {
    if !cfg!(debug_assertions) || stored.first() != Some(&POSTCARD) {
        return Ok(());
    }
    let again: T = postcard::from_bytes(&stored[1..]).map_err(codec_error)?;
    if postcard::to_allocvec(&again).map_err(codec_error)?.len() != stored.len() - 1 {
        return Err(codec_error("a value does not survive its encoding"));
    }
    Ok(())
}

/// Decodes a stored value (any format this store has written).
pub(super) fn decode<T: DeserializeOwned>(item: Item) -> R<T> {
    match item {
        Item::Legacy(json) => serde_json::from_slice(&json).map_err(codec_error),
        Item::Current(bytes) => match bytes.split_first() {
            Some((&POSTCARD, value)) => postcard::from_bytes(value).map_err(codec_error),
            Some((&JSON, value)) => serde_json::from_slice(value).map_err(codec_error),
            _ => Err(codec_error("unknown value format")),
        },
    }
}
