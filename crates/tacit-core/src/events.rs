//! What the core reports to its driver after processing incoming data.

use serde::Serialize;

/// Something that happened, for the user interface (and `--json` output).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A text message arrived.
    Message {
        /// Short id of the conversation.
        conversation: String,
        /// Its display name.
        conversation_name: String,
        /// Sender's handle (from its verified certificate).
        sender: String,
        /// Sender's device id.
        sender_device: u64,
        /// The text.
        text: String,
        /// Sender's clock, ms since the Unix epoch.
        sent_at_ms: u64,
    },
    /// This device was added to a conversation.
    Joined {
        /// Short id.
        conversation: String,
        /// Display name as far as known.
        conversation_name: String,
        /// Who added this device.
        by: String,
        /// Members' handles.
        members: Vec<String>,
    },
    /// A conversation got its name (or was renamed).
    Named {
        /// Short id.
        conversation: String,
        /// The new name.
        conversation_name: String,
    },
    /// Devices were added to a conversation.
    MembersAdded {
        /// Short id.
        conversation: String,
        /// Display name.
        conversation_name: String,
        /// Who committed the change.
        by: String,
        /// Added devices, `handle/device`.
        devices: Vec<String>,
    },
    /// Devices were removed from a conversation.
    MembersRemoved {
        /// Short id.
        conversation: String,
        /// Display name.
        conversation_name: String,
        /// Who committed the change.
        by: String,
        /// Removed devices, `handle/device`.
        devices: Vec<String>,
    },
    /// This device was removed from a conversation; it can no longer read it.
    RemovedFromConversation {
        /// Short id.
        conversation: String,
        /// Display name.
        conversation_name: String,
        /// Who removed it.
        by: String,
    },
    /// A member asked to leave; some remaining member must commit the removal.
    LeaveRequested {
        /// Short id.
        conversation: String,
        /// The group id (for the driver).
        #[serde(skip)]
        group_id: Vec<u8>,
        /// Who asked.
        handle: String,
    },
    /// A device's keys were updated (post-compromise security).
    KeysUpdated {
        /// Short id.
        conversation: String,
        /// Whose device.
        device: String,
    },
    /// Something arrived that was refused or could not be read. Named so that a person can act.
    Refused {
        /// Short id of the conversation, if known.
        conversation: String,
        /// Why.
        reason: String,
    },
}
