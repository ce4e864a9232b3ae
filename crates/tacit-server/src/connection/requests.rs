//! Requests of an authenticated device.

use super::*;

impl Session {
    pub(super) fn rate_limit(&self, device: &DeviceRecord) -> Result<(), Failure> {
        self.state.take_token(device.key).map_err(|wait| {
            let mut f = Failure::new(
                ErrorCode::RateLimited,
                format!("too many requests from this device; retry in {wait} ms"),
            );
            f.retry_after_ms = wait;
            f
        })
    }

    pub(super) async fn authenticated(&mut self, body: Req) -> Result<Option<Resp>, Failure> {
        let Some(device) = self.device.clone() else {
            return Err(Failure::new(
                ErrorCode::NotAuthenticated,
                "authenticate first",
            ));
        };
        // The delivery ends by itself only when it finds this device removed: refuse whatever
        // the device still sends, and close.
        if self.delivery_ended() {
            self.close = true;
            return Err(Failure::new(
                ErrorCode::AuthFailed,
                "this connection no longer serves this device (it was removed, or the server is going away); reconnect to find out which",
            ));
        }
        let limits = self.state.limits.clone();
        let ttl_ms = limits.message_ttl_secs.saturating_mul(1000);
        match body {
            Req::Authenticate(_) | Req::RegisterAccount(_) | Req::RegisterDevice(_) => {
                Err(Failure::new(
                    ErrorCode::MalformedFrame,
                    "this connection is already authenticated",
                ))
            }
            Req::UploadKeyPackages(u) => {
                self.rate_limit(&device)?;
                let key = device.key;
                let max = limits.max_key_packages_per_device;
                self.state
                    .db(move |s| {
                        s.upload_key_packages(
                            key,
                            &u.one_time,
                            (!u.last_resort.is_empty()).then_some(u.last_resort.as_slice()),
                            max,
                        )
                    })
                    .await?;
                Ok(Some(Resp::Done(v1::Done {})))
            }
            Req::ClaimKeyPackages(c) => {
                self.rate_limit(&device)?;
                let handle = c.handle.clone();
                let (identity_key, claimed) = self
                    .state
                    .db(move |s| s.claim_key_packages(&handle, &c.exclude_device_ids))
                    .await?;
                if claimed.is_empty() {
                    return Err(Failure::new(
                        ErrorCode::NoKeyPackages,
                        format!("{} has no device with a KeyPackage right now", c.handle),
                    ));
                }
                Ok(Some(Resp::KeyPackagesClaimed(v1::KeyPackagesClaimed {
                    handle: c.handle,
                    identity_key,
                    key_packages: claimed
                        .into_iter()
                        .map(|k| v1::ClaimedKeyPackage {
                            device_id: k.device_id,
                            key_package: k.key_package,
                            last_resort: k.last_resort,
                        })
                        .collect(),
                })))
            }
            Req::LookupUser(l) => {
                let handle = l.handle.clone();
                let user = self
                    .state
                    .db(move |s| s.user(&handle))
                    .await?
                    .ok_or_else(|| {
                        Failure::new(ErrorCode::UnknownUser, format!("no user {}", l.handle))
                    })?;
                Ok(Some(Resp::UserInfo(v1::UserInfo {
                    handle: l.handle,
                    identity_key: user.identity_key,
                    device_certificates: user.certificates,
                })))
            }
            Req::ListDevices(_) => {
                let handle = device.handle.clone();
                let user = self
                    .state
                    .db(move |s| s.user(&handle))
                    .await?
                    .ok_or_else(|| Failure::new(ErrorCode::UnknownUser, "no such user"))?;
                Ok(Some(Resp::DeviceList(v1::DeviceList {
                    device_certificates: user.certificates,
                })))
            }
            Req::RemoveDevice(r) => {
                self.rate_limit(&device)?;
                if r.device_id == device.device_id {
                    return Err(Failure::new(
                        ErrorCode::NotAllowed,
                        "a device cannot remove itself; remove it from another of your devices",
                    ));
                }
                let handle = device.handle.clone();
                let removed = self
                    .state
                    .db(move |s| s.remove_device(&handle, r.device_id))
                    .await
                    .map_err(|e| match e {
                        StoreError::UnknownDevice(_) => Failure::new(
                            ErrorCode::UnknownDevice,
                            format!(
                                "{} has no device {:016x} (removed already, or not one of yours); see `tacit devices`",
                                device.handle, r.device_id
                            ),
                        ),
                        e => e.into(),
                    })?;
                tracing::info!(connection = self.id, handle = %device.handle, removed = format!("{:016x}", r.device_id), "device removed");
                // Wakes the removed device's delivery, wherever it is connected, so that it
                // notices the removal and closes its connection.
                self.state.notifier.notify(removed);
                Ok(Some(Resp::Done(v1::Done {})))
            }
            Req::CreateGroup(c) => {
                let key = device.key;
                self.state
                    .db(move |s| s.create_group(&c.group_id, key))
                    .await?;
                Ok(Some(Resp::Done(v1::Done {})))
            }
            Req::SendCommit(c) => {
                self.rate_limit(&device)?;
                let sender = device.clone();
                let max = limits.max_queue_len_per_device;
                let (epoch, notify) = self
                    .state
                    .db(move |s| {
                        let added: Vec<(String, u64)> = c
                            .added
                            .iter()
                            .map(|a| (a.handle.clone(), a.device_id))
                            .collect();
                        let removed: Vec<(String, u64)> = c
                            .removed
                            .iter()
                            .map(|a| (a.handle.clone(), a.device_id))
                            .collect();
                        s.commit(
                            &CommitRequest {
                                group_id: &c.group_id,
                                sender: &sender,
                                epoch: c.epoch,
                                commit: &c.commit,
                                welcome: &c.welcome,
                                added: &added,
                                removed: &removed,
                            },
                            max,
                            ttl_ms,
                        )
                    })
                    .await?;
                for d in notify {
                    self.state.notifier.notify(d);
                }
                Ok(Some(Resp::CommitAccepted(v1::CommitAccepted { epoch })))
            }
            Req::SendMessage(m) => {
                self.rate_limit(&device)?;
                let sender = device.clone();
                let max = limits.max_queue_len_per_device;
                let notify = self
                    .state
                    .db(move |s| s.send_message(&m.group_id, &sender, &m.message, max, ttl_ms))
                    .await?;
                for d in notify {
                    self.state.notifier.notify(d);
                }
                Ok(Some(Resp::MessageAccepted(v1::MessageAccepted {})))
            }
            Req::Ack(a) => {
                let key = device.key;
                self.state.db(move |s| s.ack(key, a.up_to_seq)).await?;
                Ok(Some(Resp::Done(v1::Done {})))
            }
            Req::FetchGroupState(f) => {
                let key = device.key;
                let group_id = f.group_id.clone();
                let (epoch, members) = self
                    .state
                    .db(move |s| s.group_state(&group_id, key))
                    .await?;
                Ok(Some(Resp::GroupState(v1::GroupState {
                    group_id: f.group_id,
                    epoch,
                    members: members
                        .into_iter()
                        .map(|(handle, device_id)| v1::DeviceAddress { handle, device_id })
                        .collect(),
                })))
            }
            Req::LinkOpen(l) => {
                let ttl = Duration::from_secs(limits.link_slot_ttl_secs);
                self.state
                    .links
                    .open(&l.slot, &device.handle, ttl)
                    .map_err(link_failure)?;
                Ok(Some(Resp::Done(v1::Done {})))
            }
            Req::LinkSend(l) => {
                self.state
                    .links
                    .send(
                        &l.slot,
                        l.from_initiator,
                        Some(&device.handle),
                        self.id,
                        l.payload,
                    )
                    .map_err(link_failure)?;
                Ok(Some(Resp::Done(v1::Done {})))
            }
            Req::LinkReceive(l) => {
                let payload = self
                    .state
                    .links
                    .receive(&l.slot, l.for_initiator, Some(&device.handle), self.id)
                    .map_err(link_failure)?;
                Ok(Some(Resp::LinkPayload(v1::LinkPayload {
                    payload: payload.unwrap_or_default(),
                })))
            }
            Req::Ping(_) => Ok(Some(Resp::Pong(v1::Pong {}))),
        }
    }
}
