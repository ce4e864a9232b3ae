//! Session set-up: the challenge is spent on one Authenticate, RegisterAccount or RegisterDevice;
//! device-link joiners may use the relay before that.

use super::*;

impl Session {
    fn take_nonce(&mut self) -> Result<[u8; 32], Failure> {
        self.nonce.take().ok_or_else(|| {
            self.close = true;
            Failure::new(
                ErrorCode::AuthFailed,
                "this connection already used its challenge; reconnect for a fresh one",
            )
        })
    }

    pub(super) async fn unauthenticated(&mut self, body: Req) -> Result<Option<Resp>, Failure> {
        match body {
            Req::Authenticate(a) => {
                let nonce = self.take_nonce()?;
                let result = self.authenticate(a, &nonce).await;
                self.finish_auth(result).await
            }
            Req::RegisterAccount(r) => {
                let nonce = self.take_nonce()?;
                let result = self.register_account(r, &nonce).await;
                self.finish_auth(result).await
            }
            Req::RegisterDevice(r) => {
                let nonce = self.take_nonce()?;
                let result = self.register_device(r, &nonce).await;
                self.finish_auth(result).await
            }
            Req::LinkSend(l) if !l.from_initiator => {
                self.state
                    .links
                    .send(&l.slot, false, None, self.id, l.payload)
                    .map_err(link_failure)?;
                Ok(Some(Resp::Done(v1::Done {})))
            }
            Req::LinkReceive(l) if !l.for_initiator => {
                let payload = self
                    .state
                    .links
                    .receive(&l.slot, false, None, self.id)
                    .map_err(link_failure)?;
                Ok(Some(Resp::LinkPayload(v1::LinkPayload {
                    payload: payload.unwrap_or_default(),
                })))
            }
            Req::Ping(_) => Ok(Some(Resp::Pong(v1::Pong {}))),
            _ => Err(Failure::new(
                ErrorCode::NotAuthenticated,
                "authenticate first (Authenticate, RegisterAccount or RegisterDevice)",
            )),
        }
    }

    async fn finish_auth(
        &mut self,
        result: Result<DeviceRecord, Failure>,
    ) -> Result<Option<Resp>, Failure> {
        let device = match result {
            Ok(d) => d,
            Err(f) => {
                self.close = true;
                return Err(f);
            }
        };
        let key = device.key;
        let (left, has_last_resort) = self.state.db(move |s| s.key_package_stock(key)).await?;
        tracing::info!(connection = self.id, handle = %device.handle, device = format!("{:016x}", device.device_id), "authenticated");
        let address = v1::DeviceAddress {
            handle: device.handle.clone(),
            device_id: device.device_id,
        };
        self.start_delivery(key);
        self.device = Some(device);
        self.unauthenticated = None;
        Ok(Some(Resp::Authenticated(v1::Authenticated {
            device: Some(address),
            one_time_key_packages_left: left.min(u64::from(u32::MAX)) as u32,
            has_last_resort_key_package: has_last_resort,
        })))
    }

    async fn authenticate(
        &self,
        a: v1::Authenticate,
        nonce: &[u8; 32],
    ) -> Result<DeviceRecord, Failure> {
        check_version(a.version)?;
        let addr = a.device.unwrap_or_default();
        let (handle, device_id) = (addr.handle.clone(), addr.device_id);
        let device = self
            .state
            .db(move |s| s.device(&handle, device_id))
            .await?
            .ok_or_else(|| Failure::new(ErrorCode::AuthFailed, "unknown or removed device"))?;
        let key = PublicKey::from_bytes(&device.device_key)
            .map_err(|_| Failure::new(ErrorCode::AuthFailed, "device key unusable"))?;
        verify_auth(&key, nonce, &addr.handle, addr.device_id, &a.signature).map_err(|_| {
            Failure::new(
                ErrorCode::AuthFailed,
                "the signature does not verify for this device and challenge",
            )
        })?;
        Ok(device)
    }

    async fn register_account(
        &self,
        r: v1::RegisterAccount,
        nonce: &[u8; 32],
    ) -> Result<DeviceRecord, Failure> {
        check_version(r.version)?;
        let addr = r.device.unwrap_or_default();
        let identity = PublicKey::from_bytes(&r.identity_key).map_err(|_| {
            Failure::new(
                ErrorCode::InvalidCertificate,
                "identity_key is not an Ed25519 key",
            )
        })?;
        let device_key =
            certified_device_key(&r.device_certificate, &identity, &addr, &r.signature, nonce)?;
        Ok(self
            .state
            .db(move |s| {
                s.create_account(
                    &addr.handle,
                    &r.identity_key,
                    addr.device_id,
                    &device_key,
                    &r.device_certificate,
                )
            })
            .await?)
    }

    async fn register_device(
        &self,
        r: v1::RegisterDevice,
        nonce: &[u8; 32],
    ) -> Result<DeviceRecord, Failure> {
        check_version(r.version)?;
        let addr = r.device.unwrap_or_default();
        let handle = addr.handle.clone();
        let user = self
            .state
            .db(move |s| s.user(&handle))
            .await?
            .ok_or_else(|| {
                Failure::new(ErrorCode::UnknownUser, format!("no user {}", addr.handle))
            })?;
        let identity = PublicKey::from_bytes(&user.identity_key)
            .map_err(|_| Failure::new(ErrorCode::Internal, "stored identity key unusable"))?;
        let device_key =
            certified_device_key(&r.device_certificate, &identity, &addr, &r.signature, nonce)?;
        Ok(self
            .state
            .db(move |s| {
                s.add_device(
                    &addr.handle,
                    addr.device_id,
                    &device_key,
                    &r.device_certificate,
                )
            })
            .await?)
    }
}

fn check_version(version: i32) -> Result<(), Failure> {
    if version != ProtocolVersion::V1 as i32 {
        return Err(Failure::new(
            ErrorCode::UnsupportedVersion,
            "this server speaks protocol version 1",
        ));
    }
    Ok(())
}

/// Checks a registering device: its certificate verifies under `identity`, names exactly
/// `addr`, and the challenge signature verifies with the certified key. Returns that key.
fn certified_device_key(
    certificate: &[u8],
    identity: &PublicKey,
    addr: &v1::DeviceAddress,
    signature: &[u8],
    nonce: &[u8; 32],
) -> Result<Vec<u8>, Failure> {
    let cert = DeviceCertificate::from_bytes(certificate.to_vec())
        .verify_for(identity)
        .map_err(|e| Failure::new(ErrorCode::InvalidCertificate, e.to_string()))?;
    check_subject(&cert, addr)?;
    verify_auth(
        &cert.device_key,
        nonce,
        &addr.handle,
        addr.device_id,
        signature,
    )
    .map_err(|_| {
        Failure::new(
            ErrorCode::AuthFailed,
            "the signature does not verify with the certified device key",
        )
    })?;
    Ok(cert.device_key.to_bytes().to_vec())
}

fn check_subject(
    cert: &tacit_identity::VerifiedCertificate,
    addr: &v1::DeviceAddress,
) -> Result<(), Failure> {
    if cert.handle != addr.handle || cert.device_id != addr.device_id {
        return Err(Failure::new(
            ErrorCode::InvalidCertificate,
            "the certificate names another device than the one registering",
        ));
    }
    Ok(())
}
