//! Field-level validation of decoded frames: every length and count is bounded here, so that the
//! server and clients can rely on it after a single call.

use crate::limits::*;
use crate::v1::{client_frame::Body, ClientFrame, DeviceAddress};

/// A decoded frame whose fields break the schema's bounds. The message names the field and the
/// bound so a developer can act on it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {problem}")]
pub struct ValidationError {
    /// The offending field, e.g. `send_message.message`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn err(field: &'static str, problem: impl Into<String>) -> ValidationError {
    ValidationError {
        field,
        problem: problem.into(),
    }
}

fn max_len(field: &'static str, value: &[u8], max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(err(
            field,
            format!("{} bytes exceeds the limit of {max}", value.len()),
        ));
    }
    Ok(())
}

fn non_empty(field: &'static str, value: &[u8], max: usize) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(err(field, "must not be empty"));
    }
    max_len(field, value, max)
}

fn exact(field: &'static str, value: &[u8], len: usize) -> Result<(), ValidationError> {
    if value.len() != len {
        return Err(err(
            field,
            format!("must be {len} bytes, got {}", value.len()),
        ));
    }
    Ok(())
}

/// Whether `handle` is a valid user handle: 1 to 32 bytes of `a-z`, `0-9`, `_`, `-` or `.`,
/// starting with a letter or digit.
pub fn is_valid_handle(handle: &str) -> bool {
    let bytes = handle.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_HANDLE_BYTES
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
}

fn handle(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if !is_valid_handle(value) {
        return Err(err(
            field,
            "a handle is 1-32 characters of a-z, 0-9, '_', '-', '.', starting with a letter or digit",
        ));
    }
    Ok(())
}

fn address(field: &'static str, value: Option<&DeviceAddress>) -> Result<(), ValidationError> {
    match value {
        Some(a) => handle(field, &a.handle),
        None => Err(err(field, "missing device address")),
    }
}

fn slot(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty()
        || value.len() > MAX_LINK_SLOT_BYTES
        || !value.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(err(field, "a link slot is 1-32 ASCII letters or digits"));
    }
    Ok(())
}

/// Checks every field of a decoded client frame against the schema's bounds.
pub fn validate_client_frame(frame: &ClientFrame) -> Result<(), ValidationError> {
    let Some(body) = &frame.body else {
        return Err(err("body", "frame has no body"));
    };
    match body {
        Body::Authenticate(a) => {
            address("authenticate.device", a.device.as_ref())?;
            exact("authenticate.signature", &a.signature, SIGNATURE_BYTES)
        }
        Body::RegisterAccount(r) => {
            address("register_account.device", r.device.as_ref())?;
            exact("register_account.identity_key", &r.identity_key, KEY_BYTES)?;
            non_empty(
                "register_account.device_certificate",
                &r.device_certificate,
                MAX_CERTIFICATE_BYTES,
            )?;
            exact("register_account.signature", &r.signature, SIGNATURE_BYTES)
        }
        Body::RegisterDevice(r) => {
            address("register_device.device", r.device.as_ref())?;
            non_empty(
                "register_device.device_certificate",
                &r.device_certificate,
                MAX_CERTIFICATE_BYTES,
            )?;
            exact("register_device.signature", &r.signature, SIGNATURE_BYTES)
        }
        Body::UploadKeyPackages(u) => {
            if u.one_time.len() > MAX_KEY_PACKAGES_PER_UPLOAD {
                return Err(err(
                    "upload_key_packages.one_time",
                    format!(
                        "{} KeyPackages exceeds the limit of {MAX_KEY_PACKAGES_PER_UPLOAD} per upload",
                        u.one_time.len()
                    ),
                ));
            }
            for kp in &u.one_time {
                non_empty("upload_key_packages.one_time", kp, MAX_KEY_PACKAGE_BYTES)?;
            }
            max_len(
                "upload_key_packages.last_resort",
                &u.last_resort,
                MAX_KEY_PACKAGE_BYTES,
            )
        }
        Body::ClaimKeyPackages(c) => {
            handle("claim_key_packages.handle", &c.handle)?;
            if c.exclude_device_ids.len() > 1024 {
                return Err(err("claim_key_packages.exclude_device_ids", "too many"));
            }
            Ok(())
        }
        Body::LookupUser(l) => handle("lookup_user.handle", &l.handle),
        Body::ListDevices(_) | Body::Ping(_) | Body::RemoveDevice(_) => Ok(()),
        Body::CreateGroup(c) => non_empty("create_group.group_id", &c.group_id, MAX_GROUP_ID_BYTES),
        Body::SendCommit(c) => {
            non_empty("send_commit.group_id", &c.group_id, MAX_GROUP_ID_BYTES)?;
            non_empty("send_commit.commit", &c.commit, MAX_MLS_MESSAGE_BYTES)?;
            max_len("send_commit.welcome", &c.welcome, MAX_WELCOME_BYTES)?;
            if c.added.len() + c.removed.len() > MAX_ROUTING_CHANGES {
                return Err(err("send_commit.added", "too many routing changes"));
            }
            if !c.added.is_empty() && c.welcome.is_empty() {
                return Err(err(
                    "send_commit.welcome",
                    "required when devices are added",
                ));
            }
            for a in c.added.iter().chain(&c.removed) {
                handle("send_commit.added", &a.handle)?;
            }
            Ok(())
        }
        Body::SendMessage(m) => {
            non_empty("send_message.group_id", &m.group_id, MAX_GROUP_ID_BYTES)?;
            non_empty("send_message.message", &m.message, MAX_MLS_MESSAGE_BYTES)
        }
        Body::Ack(_) => Ok(()),
        Body::FetchGroupState(f) => non_empty(
            "fetch_group_state.group_id",
            &f.group_id,
            MAX_GROUP_ID_BYTES,
        ),
        Body::LinkOpen(l) => slot("link_open.slot", &l.slot),
        Body::LinkSend(l) => {
            slot("link_send.slot", &l.slot)?;
            non_empty("link_send.payload", &l.payload, MAX_LINK_PAYLOAD_BYTES)
        }
        Body::LinkReceive(l) => slot("link_receive.slot", &l.slot),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{SendMessage, UploadKeyPackages};

    #[test]
    fn handles() {
        assert!(is_valid_handle("alice"));
        assert!(is_valid_handle("bob.2-x_y"));
        assert!(!is_valid_handle(""));
        assert!(!is_valid_handle("Alice"));
        assert!(!is_valid_handle("-alice"));
        assert!(!is_valid_handle(&"a".repeat(33)));
        assert!(!is_valid_handle("al ice"));
    }

    #[test]
    fn oversized_message_is_named() {
        let frame = ClientFrame {
            request_id: 1,
            body: Some(Body::SendMessage(SendMessage {
                group_id: vec![1; 16],
                message: vec![0; MAX_MLS_MESSAGE_BYTES + 1],
            })),
        };
        let e = validate_client_frame(&frame).unwrap_err();
        assert_eq!(e.field, "send_message.message");
    }

    #[test]
    fn too_many_key_packages_refused() {
        let frame = ClientFrame {
            request_id: 1,
            body: Some(Body::UploadKeyPackages(UploadKeyPackages {
                one_time: vec![vec![1]; MAX_KEY_PACKAGES_PER_UPLOAD + 1],
                last_resort: vec![],
            })),
        };
        assert_eq!(
            validate_client_frame(&frame).unwrap_err().field,
            "upload_key_packages.one_time"
        );
    }
}
