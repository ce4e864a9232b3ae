//! The name of each kind of frame, as the schema spells its field (`send_message`,
//! `key_packages_claimed`): for logs, error messages and tools.

use crate::v1::{client_frame, server_frame};

impl client_frame::Body {
    /// The schema's name for this kind of client frame. Every kind has one (the match is
    /// exhaustive, so a new kind does not compile until it is named).
    pub fn kind(&self) -> &'static str {
        use client_frame::Body::*;
        match self {
            Authenticate(_) => "authenticate",
            RegisterAccount(_) => "register_account",
            RegisterDevice(_) => "register_device",
            UploadKeyPackages(_) => "upload_key_packages",
            ClaimKeyPackages(_) => "claim_key_packages",
            LookupUser(_) => "lookup_user",
            ListDevices(_) => "list_devices",
            RemoveDevice(_) => "remove_device",
            CreateGroup(_) => "create_group",
            SendCommit(_) => "send_commit",
            SendMessage(_) => "send_message",
            Ack(_) => "ack",
            FetchGroupState(_) => "fetch_group_state",
            LinkOpen(_) => "link_open",
            LinkSend(_) => "link_send",
            LinkReceive(_) => "link_receive",
            Ping(_) => "ping",
        }
    }
}

impl server_frame::Body {
    /// The schema's name for this kind of server frame (exhaustive, as for client frames).
    pub fn kind(&self) -> &'static str {
        use server_frame::Body::*;
        match self {
            Challenge(_) => "challenge",
            Error(_) => "error",
            Authenticated(_) => "authenticated",
            Done(_) => "done",
            KeyPackagesClaimed(_) => "key_packages_claimed",
            UserInfo(_) => "user_info",
            DeviceList(_) => "device_list",
            CommitAccepted(_) => "commit_accepted",
            MessageAccepted(_) => "message_accepted",
            Envelope(_) => "envelope",
            QueueDrained(_) => "queue_drained",
            GroupState(_) => "group_state",
            LinkPayload(_) => "link_payload",
            Pong(_) => "pong",
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::v1::{client_frame, server_frame, Ping, Pong};

    #[test]
    fn kinds_are_the_schema_field_names() {
        assert_eq!(client_frame::Body::Ping(Ping {}).kind(), "ping");
        assert_eq!(server_frame::Body::Pong(Pong {}).kind(), "pong");
    }
}
