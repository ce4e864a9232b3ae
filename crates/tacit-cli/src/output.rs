//! Human-readable and JSON output.

use serde::Serialize;
use tacit_core::{Conversation, Event, HistoryEntry};

/// Formats a time in ms since the Unix epoch as `HH:MM:SS` UTC.
pub fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// One event as a line of text.
pub fn event_line(e: &Event) -> String {
    match e {
        Event::Message {
            conversation_name,
            sender,
            text,
            sent_at_ms,
            ..
        } => {
            format!(
                "[{}] {conversation_name} | {sender}: {text}",
                clock(*sent_at_ms)
            )
        }
        Event::Joined {
            conversation_name,
            by,
            members,
            conversation,
        } => {
            format!(
                "* {by} added you to {conversation_name} ({conversation}); members: {}",
                members.join(", ")
            )
        }
        Event::Named {
            conversation_name,
            conversation,
        } => format!("* conversation {conversation} is {conversation_name}"),
        Event::MembersAdded {
            conversation_name,
            by,
            devices,
            ..
        } => {
            format!("* {conversation_name}: {by} added {}", devices.join(", "))
        }
        Event::MembersRemoved {
            conversation_name,
            by,
            devices,
            ..
        } => {
            format!("* {conversation_name}: {by} removed {}", devices.join(", "))
        }
        Event::RemovedFromConversation {
            conversation_name,
            by,
            ..
        } => {
            format!("* {by} removed you from {conversation_name}")
        }
        Event::LeaveRequested {
            conversation,
            handle,
            ..
        } => format!("* {handle} left {conversation}"),
        Event::KeysUpdated {
            conversation,
            device,
        } => format!("* {device} updated their keys in {conversation}"),
        Event::Refused {
            conversation,
            reason,
        } => format!("! {conversation}: {reason}"),
    }
}

/// Prints events as text or JSON lines.
pub fn print_events(events: &[Event], json: bool) {
    for e in events {
        if json {
            println!("{}", to_json(e));
        } else {
            println!("{}", event_line(e));
        }
    }
}

/// Serializes for `--json`.
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// A conversation as JSON.
#[derive(Serialize)]
pub struct ConversationJson<'a> {
    pub id: String,
    pub name: &'a str,
    pub direct_peer: Option<&'a str>,
    pub active: bool,
    pub members: Vec<String>,
}

/// Prints a history.
pub fn print_history(c: &Conversation, entries: &[HistoryEntry], json: bool) {
    if json {
        #[derive(Serialize)]
        struct Line<'a> {
            conversation: String,
            sender: &'a str,
            sender_device: u64,
            sent_at_ms: u64,
            text: &'a str,
            outgoing: bool,
            system: bool,
        }
        for e in entries {
            println!(
                "{}",
                to_json(&Line {
                    conversation: c.short_id(),
                    sender: &e.sender,
                    sender_device: e.sender_device,
                    sent_at_ms: e.sent_at_ms,
                    text: &e.text,
                    outgoing: e.outgoing,
                    system: e.system,
                })
            );
        }
        return;
    }
    println!("{} ({})", c.name, c.short_id());
    for e in entries {
        if e.system {
            println!("  [{}] * {}", clock(e.sent_at_ms), e.text);
        } else {
            println!("  [{}] {}: {}", clock(e.sent_at_ms), e.sender, e.text);
        }
    }
}
