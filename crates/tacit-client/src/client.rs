//! The networked client: drives a [`tacit_core::Device`] over a [`Connection`], with the
//! outbox, commit retries, KeyPackage top-up and delivery acknowledgments.

use std::time::Duration;

use tacit_core::{
    ClaimedUser, Conversation, CoreError, Device, Event, HistoryEntry, OutgoingCommit,
    OutgoingMessage, Processed, SafetyNumber,
};
use tacit_proto::v1::{
    self, client_frame::Body as Req, server_frame::Body as Resp, DeviceAddress, ErrorCode,
    ProtocolVersion,
};

use crate::error::{ClientError, Result};
use crate::transport::{Connection, TlsOptions};

/// How many times a commit is retried after "epoch moved on".
pub const MAX_COMMIT_ATTEMPTS: usize = 8;
/// How long to wait for missed commits to arrive while catching up.
const CATCH_UP_SECS: u64 = 15;

/// A device of the user, from the directory.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceInfo {
    /// `handle/device-id`.
    pub name: String,
    /// Device id.
    pub device_id: u64,
    /// When its certificate was issued (ms since the Unix epoch).
    pub issued_at_ms: u64,
    /// Whether it is this device.
    pub this_device: bool,
}

/// What [`Client::remove_device`] did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RemovedDevice {
    /// `handle/device-id` of the removed device.
    pub name: String,
    /// Conversations from which this device committed its removal (so it cannot read what is
    /// said there from now on).
    pub removed_from: Vec<String>,
    /// Conversations where that commit failed, with the reason; the server no longer routes
    /// anything to the removed device, but it is still in their MLS group until a member
    /// removes it (calling [`Client::remove_device`] again finishes what is left).
    pub failed: Vec<(String, String)>,
}

/// The networked client of one device profile.
pub struct Client {
    device: Device,
    conn: Option<Connection>,
    tls: TlsOptions,
    /// Events produced while doing something else (e.g. while catching up before a commit);
    /// handed out by [`Client::take_events`].
    events: Vec<Event>,
    /// Whether the current connection's backlog has been received (the server's QueueDrained
    /// marker was seen, by whichever code path handled it).
    drained: bool,
    /// Index, in the profile's server list, of the node that answered last.
    preferred_server: usize,
}

fn addr(handle: &str, device_id: u64) -> DeviceAddress {
    DeviceAddress {
        handle: handle.to_owned(),
        device_id,
    }
}

impl Client {
    /// Wraps an opened device.
    pub fn new(device: Device, tls: TlsOptions) -> Self {
        Client {
            device,
            conn: None,
            tls,
            events: Vec::new(),
            drained: false,
            preferred_server: 0,
        }
    }

    /// The core device (for local-only queries).
    pub fn device(&mut self) -> &mut Device {
        &mut self.device
    }

    /// Events collected so far that the caller has not taken yet.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Creates a user with this device as its first device, registers it and uploads
    /// KeyPackages.
    pub async fn create_account(&mut self, handle: &str, server_url: &str) -> Result<()> {
        let reg = self.device.create_account(handle, server_url)?;
        let (conn, node) = Connection::connect_any(server_url, &self.tls, 0).await?;
        self.preferred_server = node;
        let signature = self.device.sign_auth(&conn.nonce)?;
        let answer = conn
            .request(Req::RegisterAccount(v1::RegisterAccount {
                version: ProtocolVersion::V1 as i32,
                device: Some(addr(&reg.handle, reg.device_id)),
                identity_key: reg.identity_key.to_bytes().to_vec(),
                device_certificate: reg.certificate.as_bytes().to_vec(),
                signature: signature.to_vec(),
            }))
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                return Err(e);
            }
        };
        self.after_auth(conn, answer).await
    }

    /// Connects and authenticates if not connected yet; drains the outbox and resends
    /// in-flight commits.
    pub async fn connect(&mut self) -> Result<()> {
        if self.conn.is_some() {
            return Ok(());
        }
        let servers = self.device.server_url()?.to_owned();
        let (conn, node) =
            Connection::connect_any(&servers, &self.tls, self.preferred_server).await?;
        self.preferred_server = node;
        let signature = self.device.sign_auth(&conn.nonce)?;
        let reg = self.device.registration()?;
        let answer = conn
            .request(Req::Authenticate(v1::Authenticate {
                version: ProtocolVersion::V1 as i32,
                device: Some(addr(&reg.handle, reg.device_id)),
                signature: signature.to_vec(),
            }))
            .await?;
        self.after_auth(conn, answer).await
    }

    /// Drops the connection (the next operation reconnects).
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    async fn after_auth(&mut self, conn: Connection, answer: Resp) -> Result<()> {
        let Resp::Authenticated(auth) = answer else {
            return Err(ClientError::Protocol("expected Authenticated".into()));
        };
        self.conn = Some(conn);
        self.top_up_key_packages(
            auth.one_time_key_packages_left,
            auth.has_last_resort_key_package,
        )
        .await?;
        self.resend_inflight().await?;
        self.flush_outbox().await?;
        Ok(())
    }

    fn conn(&self) -> Result<&Connection> {
        self.conn
            .as_ref()
            .ok_or_else(|| ClientError::Disconnected("not connected".into()))
    }

    async fn request(&mut self, body: Req) -> Result<Resp> {
        let result = self.conn()?.request(body).await;
        if let Err(ClientError::Disconnected(_) | ClientError::Timeout(_)) = &result {
            self.conn = None;
        }
        result
    }

    async fn top_up_key_packages(&mut self, left: u32, has_last_resort: bool) -> Result<()> {
        let stock = self.device_config_stock();
        let (target, low) = stock;
        let one_time = if left < low {
            self.device.new_key_packages((target - left) as usize)?
        } else {
            vec![]
        };
        let last_resort = if has_last_resort {
            vec![]
        } else {
            self.device.new_last_resort_key_package()?
        };
        if one_time.is_empty() && last_resort.is_empty() {
            return Ok(());
        }
        self.request(Req::UploadKeyPackages(v1::UploadKeyPackages {
            one_time,
            last_resort,
        }))
        .await?;
        Ok(())
    }

    fn device_config_stock(&self) -> (u32, u32) {
        let c = tacit_core::CoreConfig::default();
        (c.key_package_stock, c.key_package_low_watermark)
    }

    async fn resend_inflight(&mut self) -> Result<()> {
        for outgoing in self.device.inflight_commits()? {
            match self.send_commit(&outgoing).await {
                Ok(()) => {}
                // Some commit took this epoch: ours (accepted before the answer was lost; its
                // echo in the queue merges it) or another member's (processing it drops ours).
                // The queue decides; dropping ours here would strand us an epoch behind.
                Err(ClientError::Server {
                    code: ErrorCode::EpochMovedOn,
                    ..
                }) => {}
                // Not now: keep it for the next connection.
                Err(e) if e.is_temporary() => return Err(e),
                Err(e) if e.server_code().is_some() => {
                    self.device.commit_rejected(&outgoing.group_id)?
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends every outbox item, oldest first; each leaves the outbox once accepted.
    pub async fn flush_outbox(&mut self) -> Result<()> {
        for item in self.device.outbox()? {
            let answer = self
                .request(Req::SendMessage(v1::SendMessage {
                    group_id: item.group_id.clone(),
                    message: item.message,
                }))
                .await;
            match answer {
                Ok(_) => self.device.outbox_sent(item.id)?,
                // Temporary (slow down, storage restarting, server hiccup): the message stays
                // in the outbox for the next attempt.
                Err(e) if e.is_temporary() => return Err(e),
                Err(ClientError::Server { code, message, .. }) => {
                    // Permanently refused (e.g. no longer a member): drop it and say so.
                    self.device.outbox_sent(item.id)?;
                    self.events.push(Event::Refused {
                        conversation: hex::encode(&item.group_id).chars().take(8).collect(),
                        reason: format!(
                            "the server refused a message you sent: {message} ({code:?})"
                        ),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends a staged commit; merges it on acceptance (and announces conversation meta).
    async fn send_commit(&mut self, outgoing: &OutgoingCommit) -> Result<()> {
        let answer = self
            .request(Req::SendCommit(v1::SendCommit {
                group_id: outgoing.group_id.clone(),
                epoch: outgoing.epoch,
                commit: outgoing.commit.clone(),
                welcome: outgoing.welcome.clone(),
                added: outgoing.added.iter().map(|(h, d)| addr(h, *d)).collect(),
                removed: outgoing.removed.iter().map(|(h, d)| addr(h, *d)).collect(),
            }))
            .await?;
        let Resp::CommitAccepted(_) = answer else {
            return Err(ClientError::Protocol("expected CommitAccepted".into()));
        };
        if let Some(meta) = self.device.commit_accepted(&outgoing.group_id)? {
            self.send_message(meta).await?;
        }
        Ok(())
    }

    async fn send_message(&mut self, m: OutgoingMessage) -> Result<()> {
        self.request(Req::SendMessage(v1::SendMessage {
            group_id: m.group_id,
            message: m.message,
        }))
        .await?;
        self.device.outbox_sent(m.outbox_id)?;
        Ok(())
    }

    /// Runs a commit intent: stage, send, and on "epoch moved on" drop it, catch up with the
    /// missed commits and try again (bounded), so that concurrent committers converge.
    async fn run_commit(
        &mut self,
        group_id: &[u8],
        mut stage: impl FnMut(&mut Device) -> tacit_core::Result<Option<OutgoingCommit>>,
    ) -> Result<()> {
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            self.process_waiting().await?;
            let Some(outgoing) = stage(&mut self.device)? else {
                return Ok(());
            };
            match self.send_commit(&outgoing).await {
                Ok(()) => return Ok(()),
                Err(ClientError::Server {
                    code: ErrorCode::EpochMovedOn,
                    current_epoch,
                    ..
                }) => {
                    self.device.commit_rejected(group_id)?;
                    self.catch_up(group_id, current_epoch).await?;
                }
                Err(e) => {
                    // A temporary failure may hide an accepted commit: keep it in flight, to be
                    // resent (or matched with its echo) on the next connection.
                    if e.server_code().is_some() && !e.is_temporary() {
                        self.device.commit_rejected(group_id)?;
                    }
                    return Err(e);
                }
            }
        }
        Err(ClientError::Usage(format!(
            "the conversation kept changing; gave up after {MAX_COMMIT_ATTEMPTS} attempts, try again"
        )))
    }

    /// Processes pushed envelopes until the group reaches `epoch` (bounded wait).
    async fn catch_up(&mut self, group_id: &[u8], epoch: u64) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(CATCH_UP_SECS);
        while self.device.epoch(group_id)? < epoch {
            let conn = self
                .conn
                .as_mut()
                .ok_or_else(|| ClientError::Disconnected("not connected".into()))?;
            let frame = tokio::time::timeout_at(deadline, conn.next_push())
                .await
                .map_err(|_| ClientError::Timeout(CATCH_UP_SECS))?
                .ok_or_else(|| ClientError::Disconnected("closed while catching up".into()))?;
            self.handle_push(frame).await?;
        }
        Ok(())
    }

    /// Processes every pushed frame already waiting, without blocking.
    async fn process_waiting(&mut self) -> Result<()> {
        while let Some(frame) = self.conn.as_mut().and_then(|c| c.try_next_push()) {
            self.handle_push(frame).await?;
        }
        Ok(())
    }

    /// Handles one pushed frame. Returns true for the queue-drained marker.
    async fn handle_push(&mut self, frame: v1::ServerFrame) -> Result<bool> {
        match frame.body {
            Some(Resp::Envelope(env)) => {
                self.process_envelope(&env).await?;
                self.conn()?
                    .send_only(Req::Ack(v1::Ack { up_to_seq: env.seq }))
                    .await?;
                Ok(false)
            }
            Some(Resp::QueueDrained(_)) => {
                self.drained = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn process_envelope(&mut self, env: &v1::Envelope) -> Result<()> {
        let mut looked_up = false;
        loop {
            match self.device.process_envelope(env) {
                Ok(Processed::Events(events)) => {
                    // A Welcome used up one of our KeyPackages: replace it right away, so that a
                    // device that stays connected keeps its stock.
                    if events.iter().any(|e| matches!(e, Event::Joined { .. })) {
                        let one_time = self.device.new_key_packages(1)?;
                        self.request(Req::UploadKeyPackages(v1::UploadKeyPackages {
                            one_time,
                            last_resort: vec![],
                        }))
                        .await?;
                    }
                    for e in &events {
                        if let Event::LeaveRequested { group_id, .. } = e {
                            let g = group_id.clone();
                            // Any remaining member may commit the removal; losing the race is fine.
                            let _ = Box::pin(self.run_commit(&g, |d| d.prepare_commit_pending(&g)))
                                .await;
                        }
                    }
                    self.events.extend(events);
                    return Ok(());
                }
                Ok(Processed::Duplicate) => return Ok(()),
                Err(CoreError::UnknownIdentities(handles)) if !looked_up => {
                    looked_up = true;
                    for h in handles {
                        match self.lookup_and_pin(&h).await {
                            Ok(_) => {}
                            // A changed key or an unknown user: refuse this envelope (never use
                            // the key), say why, and let the queue move on.
                            Err(e @ (ClientError::Core(_) | ClientError::Server { .. })) => {
                                let event = self.device.refuse_envelope(env, &e.to_string())?;
                                self.events.push(event);
                                return Ok(());
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Looks a user up in the directory and pins their identity key (trust on first use; a
    /// changed key is refused).
    pub async fn lookup_and_pin(&mut self, handle: &str) -> Result<v1::UserInfo> {
        self.connect().await?;
        let Resp::UserInfo(info) = self
            .request(Req::LookupUser(v1::LookupUser {
                handle: handle.to_owned(),
            }))
            .await?
        else {
            return Err(ClientError::Protocol("expected UserInfo".into()));
        };
        self.device.pin_identity(handle, &info.identity_key)?;
        Ok(info)
    }

    /// Receives everything queued for this device, processes it and acknowledges it.
    pub async fn sync(&mut self) -> Result<Vec<Event>> {
        // A fresh connection: the server streams the backlog and then marks the end of it.
        self.process_waiting().await.ok();
        self.conn = None;
        self.drained = false;
        self.connect().await?;
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(crate::transport::REQUEST_TIMEOUT_SECS * 4);
        while !self.drained {
            let conn = self
                .conn
                .as_mut()
                .ok_or_else(|| ClientError::Disconnected("not connected".into()))?;
            let frame = tokio::time::timeout_at(deadline, conn.next_push())
                .await
                .map_err(|_| ClientError::Timeout(crate::transport::REQUEST_TIMEOUT_SECS * 4))?;
            let Some(frame) = frame else {
                self.conn = None;
                return Err(ClientError::Disconnected("closed during sync".into()));
            };
            // The marker may be handled here or while an envelope triggers a commit.
            self.handle_push(frame).await?;
        }
        self.process_waiting().await?;
        Ok(self.take_events())
    }

    /// Stays connected and hands each event to `on_event` as it happens, reconnecting with
    /// back-off when the connection drops, until `stop` completes.
    pub async fn listen(
        &mut self,
        mut on_event: impl FnMut(Event),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        tokio::pin!(stop);
        let mut backoff = Duration::from_millis(250);
        loop {
            if self.conn.is_none() {
                if let Err(e) = self.connect().await {
                    tracing::warn!("reconnect failed: {e}; retrying in {:?}", backoff);
                    tokio::select! {
                        _ = &mut stop => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
                backoff = Duration::from_millis(250);
            }
            let conn = self
                .conn
                .as_mut()
                .ok_or_else(|| ClientError::Disconnected("not connected".into()))?;
            let frame = tokio::select! {
                _ = &mut stop => return Ok(()),
                f = conn.next_push() => f,
            };
            match frame {
                Some(f) => {
                    self.handle_push(f).await?;
                    for e in self.take_events() {
                        on_event(e);
                    }
                }
                None => self.conn = None,
            }
        }
    }

    async fn claim(&mut self, handle: &str, exclude: Vec<u64>) -> Result<Option<ClaimedUser>> {
        let answer = self
            .request(Req::ClaimKeyPackages(v1::ClaimKeyPackages {
                handle: handle.to_owned(),
                exclude_device_ids: exclude,
            }))
            .await;
        let claimed = match answer {
            Ok(Resp::KeyPackagesClaimed(c)) => c,
            Ok(_) => return Err(ClientError::Protocol("expected KeyPackagesClaimed".into())),
            Err(ClientError::Server {
                code: ErrorCode::NoKeyPackages,
                ..
            }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if claimed.key_packages.is_empty() {
            return Ok(None);
        }
        Ok(Some(ClaimedUser {
            handle: claimed.handle,
            identity_key: claimed.identity_key,
            key_packages: claimed
                .key_packages
                .into_iter()
                .map(|k| (k.device_id, k.key_package))
                .collect(),
        }))
    }

    /// Claims KeyPackages for every device of the named users (and this user's other devices)
    /// and adds them to the conversation.
    pub async fn add_members(&mut self, group_id: &[u8], handles: &[String]) -> Result<()> {
        self.connect().await?;
        let me = self.device.handle()?.to_owned();
        let my_id = self.device.device_id()?;
        let present = self.device.members(group_id)?;
        let mut users = Vec::new();
        for h in handles.iter().chain(std::iter::once(&me)) {
            if users.iter().any(|u: &ClaimedUser| &u.handle == h) {
                continue;
            }
            // Devices already in the group (e.g. our own other devices) need no KeyPackage.
            let exclude: Vec<u64> = present
                .iter()
                .filter(|(ph, _)| ph == h)
                .map(|(_, d)| *d)
                .chain(std::iter::once(my_id).filter(|_| h == &me))
                .collect();
            match self.claim(h, exclude).await? {
                Some(u) => users.push(u),
                None if h == &me => {}
                None => {
                    return Err(ClientError::Usage(format!(
                        "{h} has no device that can be added right now"
                    )))
                }
            }
        }
        if users.is_empty() {
            return Ok(());
        }
        // A retry after "epoch moved on" re-uses the claimed KeyPackages: the refused commit's
        // Welcome never reached anyone.
        let g = group_id.to_vec();
        self.run_commit(group_id, move |d| d.prepare_add(&g, &users).map(Some))
            .await
    }

    /// Creates a group with the named members.
    pub async fn create_group(&mut self, name: &str, handles: &[String]) -> Result<Conversation> {
        self.create_conversation(name, None, handles).await
    }

    async fn create_conversation(
        &mut self,
        name: &str,
        direct: Option<&str>,
        handles: &[String],
    ) -> Result<Conversation> {
        self.connect().await?;
        for h in handles {
            self.lookup_and_pin(h).await?;
        }
        let conversation = self.device.create_conversation(name, direct)?;
        let group_id = conversation.group_id.clone();
        let set_up = async {
            self.request(Req::CreateGroup(v1::CreateGroup {
                group_id: group_id.clone(),
            }))
            .await?;
            self.add_members(&group_id, handles).await
        }
        .await;
        if let Err(e) = set_up {
            // Never leave an empty conversation behind that later sends could pick.
            self.device.abandon_conversation(&conversation.group_id)?;
            return Err(e);
        }
        Ok(conversation)
    }

    /// Removes every device of the named users from a conversation.
    pub async fn remove_members(&mut self, group_id: &[u8], handles: &[String]) -> Result<()> {
        self.connect().await?;
        let g = group_id.to_vec();
        let hs = handles.to_vec();
        self.run_commit(group_id, move |d| d.prepare_remove(&g, &hs).map(Some))
            .await
    }

    /// Updates this device's keys in a conversation (post-compromise security).
    pub async fn update_keys(&mut self, group_id: &[u8]) -> Result<()> {
        self.connect().await?;
        let g = group_id.to_vec();
        self.run_commit(group_id, move |d| d.prepare_self_update(&g).map(Some))
            .await
    }

    /// Asks to leave a conversation; another member commits the removal.
    pub async fn leave(&mut self, group_id: &[u8]) -> Result<()> {
        self.connect().await?;
        self.process_waiting().await?;
        let message = self.device.leave(group_id)?;
        self.request(Req::SendMessage(v1::SendMessage {
            group_id: group_id.to_vec(),
            message,
        }))
        .await?;
        Ok(())
    }

    /// Resolves a send target: an existing conversation (1:1 peer, group name, or id), or a
    /// handle with whom a new 1:1 conversation is started.
    pub async fn resolve_or_start(&mut self, target: &str) -> Result<Conversation> {
        if let Some(c) = self.device.find_conversation(target)? {
            if c.active {
                return Ok(c);
            }
        }
        if tacit_proto::validate::is_valid_handle(target) {
            let me = self.device.handle()?.to_owned();
            if target == me {
                return Err(ClientError::Usage(
                    "you cannot start a conversation with yourself".into(),
                ));
            }
            return self
                .create_conversation(target, Some(target), &[target.to_owned()])
                .await;
        }
        Err(CoreError::UnknownConversation(target.to_owned()).into())
    }

    /// Sends a text to a target (see [`Client::resolve_or_start`]). The message is in the
    /// outbox before it is sent, so it survives a crash and is sent on the next connection.
    pub async fn send(
        &mut self,
        target: &str,
        text: &str,
    ) -> Result<(Conversation, OutgoingMessage)> {
        let existing = self.device.find_conversation(target)?.filter(|c| c.active);
        let conversation = match existing {
            Some(c) => {
                // Catch up first when we can, so the message is sent in the newest epoch.
                if self.connect().await.is_ok() {
                    self.process_waiting().await?;
                }
                c
            }
            None => {
                self.connect().await?;
                self.process_waiting().await?;
                self.resolve_or_start(target).await?
            }
        };
        let message = self.device.encrypt_text(&conversation.group_id, text)?;
        // The message is in the outbox now; connecting flushes it.
        let delivered = async {
            self.connect().await?;
            self.flush_outbox().await
        }
        .await;
        if let Err(e) = delivered {
            return Err(ClientError::Disconnected(format!(
                "{e}; the message is kept in the outbox and will be sent on the next connection"
            )));
        }
        Ok((conversation, message))
    }

    /// The user's devices, from the directory.
    pub async fn devices(&mut self) -> Result<Vec<DeviceInfo>> {
        self.connect().await?;
        let Resp::DeviceList(list) = self.request(Req::ListDevices(v1::ListDevices {})).await?
        else {
            return Err(ClientError::Protocol("expected DeviceList".into()));
        };
        let my_id = self.device.device_id()?;
        let handle = self.device.handle()?.to_owned();
        let identity = self
            .device
            .pinned_identity(&handle)?
            .ok_or(CoreError::NoAccount)?;
        let mut out = Vec::new();
        for cert in list.device_certificates {
            let v = tacit_identity::DeviceCertificate::from_bytes(cert)
                .verify_for(&identity)
                .map_err(|e| {
                    ClientError::Protocol(format!("the directory returned a bad certificate: {e}"))
                })?;
            out.push(DeviceInfo {
                name: v.device_name(),
                device_id: v.device_id,
                issued_at_ms: v.issued_at_ms,
                this_device: v.device_id == my_id,
            });
        }
        Ok(out)
    }

    /// Removes another device of this user (a lost or stolen one): the server forgets it (it
    /// can no longer connect, is left out of the directory, and nothing more is queued for it),
    /// then this device commits its removal in every conversation it is in. Called again for a
    /// device the server has removed already, it finishes the conversations still left.
    pub async fn remove_device(&mut self, device_id: u64) -> Result<RemovedDevice> {
        let handle = self.device.handle()?.to_owned();
        if device_id == self.device.device_id()? {
            return Err(ClientError::Usage(
                "that is this device; remove it from another of your devices".into(),
            ));
        }
        self.connect().await?;
        let mut conversations = Vec::new();
        for c in self.device.conversations()? {
            if c.active
                && self
                    .device
                    .members(&c.group_id)?
                    .contains(&(handle.clone(), device_id))
            {
                conversations.push(c);
            }
        }
        match self
            .request(Req::RemoveDevice(v1::RemoveDevice { device_id }))
            .await
        {
            Ok(_) => {}
            // Removed from the server by an earlier attempt whose group removals did not all
            // go through: finish those.
            Err(e)
                if e.server_code() == Some(ErrorCode::UnknownDevice)
                    && !conversations.is_empty() => {}
            Err(e) => return Err(e),
        }
        let mut removed_from = Vec::new();
        let mut failed = Vec::new();
        for c in conversations {
            let (g, h) = (c.group_id.clone(), handle.clone());
            let done = self
                .run_commit(&c.group_id, move |d| {
                    // A commit that lost a race may already have removed it.
                    if d.members(&g)?.contains(&(h.clone(), device_id)) {
                        d.prepare_remove_device(&g, &h, device_id).map(Some)
                    } else {
                        Ok(None)
                    }
                })
                .await;
            match done {
                Ok(()) => removed_from.push(c.name),
                Err(e) => failed.push((c.name, e.to_string())),
            }
        }
        Ok(RemovedDevice {
            name: format!("{handle}/{device_id:016x}"),
            removed_from,
            failed,
        })
    }

    /// A conversation's history from the local store.
    pub fn history(&mut self, target: &str) -> Result<(Conversation, Vec<HistoryEntry>)> {
        let c = self
            .device
            .find_conversation(target)?
            .ok_or_else(|| CoreError::UnknownConversation(target.to_owned()))?;
        let h = self.device.history(&c.group_id)?;
        Ok((c, h))
    }

    /// The safety number with `handle` (looked up and pinned first if needed).
    pub async fn safety_number(&mut self, handle: &str) -> Result<SafetyNumber> {
        if self.device.pinned_identity(handle)?.is_none() {
            self.lookup_and_pin(handle).await?;
        }
        Ok(self.device.safety_number(handle)?)
    }

    /// Opens a link slot and runs the initiator side: `show_code` receives the code to display.
    /// Returns the new device's name once it is certified.
    pub async fn link_device(
        &mut self,
        show_code: impl FnOnce(&str),
        timeout: Duration,
    ) -> Result<String> {
        self.connect().await?;
        let (mut initiator, first) = tacit_core::link::Initiator::start();
        let slot = initiator.code().slot.clone();
        self.request(Req::LinkOpen(v1::LinkOpen { slot: slot.clone() }))
            .await?;
        self.request(Req::LinkSend(v1::LinkSend {
            slot: slot.clone(),
            from_initiator: true,
            payload: first,
        }))
        .await?;
        show_code(&initiator.code().display());
        let deadline = tokio::time::Instant::now() + timeout;
        let pake = self.link_receive(&slot, true, deadline).await?;
        initiator.on_pake(&pake)?;
        let request = self.link_receive(&slot, true, deadline).await?;
        let (grant, name) = initiator.on_request(&self.device, &request)?;
        self.request(Req::LinkSend(v1::LinkSend {
            slot,
            from_initiator: true,
            payload: grant,
        }))
        .await?;
        Ok(name)
    }

    async fn link_receive(
        &mut self,
        slot: &str,
        for_initiator: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>> {
        loop {
            let Resp::LinkPayload(p) = self
                .request(Req::LinkReceive(v1::LinkReceive {
                    slot: slot.to_owned(),
                    for_initiator,
                }))
                .await?
            else {
                return Err(ClientError::Protocol("expected LinkPayload".into()));
            };
            if !p.payload.is_empty() {
                return Ok(p.payload);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Usage(
                    "the other device did not answer in time; start again with a new code".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The joiner side: this (empty) profile becomes a new device of the user who showed
    /// `code`, registers with the server and uploads KeyPackages.
    pub async fn join_device(
        &mut self,
        code: &str,
        server_url: &str,
        timeout: Duration,
    ) -> Result<String> {
        if self.device.has_account() {
            return Err(CoreError::AccountExists(self.device.handle()?.to_owned()).into());
        }
        let code = tacit_core::link::LinkCode::parse(code)?;
        let (mut joiner, first) = tacit_core::link::Joiner::start(code);
        let slot = joiner.slot().to_owned();
        // Unauthenticated relay connection.
        let (conn, node) = Connection::connect_any(server_url, &self.tls, 0).await?;
        self.conn = Some(conn);
        self.request(Req::LinkSend(v1::LinkSend {
            slot: slot.clone(),
            from_initiator: false,
            payload: first,
        }))
        .await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let pake = self.link_receive(&slot, false, deadline).await?;
        let sealed = joiner.on_pake(&pake)?;
        self.request(Req::LinkSend(v1::LinkSend {
            slot: slot.clone(),
            from_initiator: false,
            payload: sealed,
        }))
        .await?;
        let grant = self.link_receive(&slot, false, deadline).await?;
        let reg = joiner.on_grant(&mut self.device, &grant, server_url)?;
        // Register on a fresh connection (fresh challenge), at the node that relayed the link.
        let (conn, node) = Connection::connect_any(server_url, &self.tls, node).await?;
        self.preferred_server = node;
        let signature = self.device.sign_auth(&conn.nonce)?;
        let answer = conn
            .request(Req::RegisterDevice(v1::RegisterDevice {
                version: ProtocolVersion::V1 as i32,
                device: Some(addr(&reg.handle, reg.device_id)),
                device_certificate: reg.certificate.as_bytes().to_vec(),
                signature: signature.to_vec(),
            }))
            .await?;
        self.after_auth(conn, answer).await?;
        Ok(format!("{}/{:016x}", reg.handle, reg.device_id))
    }
}
