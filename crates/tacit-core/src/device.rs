//! A device profile: its account, keys, pinned contacts and KeyPackages. Every method runs in
//! one local-store transaction, so each operation is all-or-nothing.

use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_rust_crypto::RustCrypto;
use tacit_identity::{DeviceCertificate, DeviceKeyPair, IdentityKeyPair, PublicKey, SafetyNumber};
use tacit_proto::validate::is_valid_handle;

use crate::config::CoreConfig;
use crate::credential::{credential_with_key, CertCache};
use crate::error::{mls, CoreError, Result};
use crate::groups::GroupCache;
use crate::records::*;
use crate::signer::DeviceSigner;
use crate::store::{LocalStore, Namespace, StoreTx};

/// The loaded account of a device.
pub(crate) struct Account {
    pub handle: String,
    pub device_id: u64,
    pub device_key: DeviceKeyPair,
    pub identity: IdentityKeyPair,
    pub certificate: DeviceCertificate,
    pub server_url: String,
}

impl Account {
    fn from_stored(stored: &StoredAccount) -> Result<Self> {
        let secret = |bytes: &[u8], what: &'static str| -> Result<[u8; 32]> {
            bytes.try_into().map_err(|_| CoreError::Malformed {
                what,
                reason: "stored key has the wrong length".into(),
            })
        };
        let mut device_secret = secret(&stored.device_secret, "device key")?;
        let mut identity_secret = secret(&stored.identity_secret, "identity key")?;
        let account = Account {
            handle: stored.handle.clone(),
            device_id: stored.device_id,
            device_key: DeviceKeyPair::from_secret_bytes(&device_secret),
            identity: IdentityKeyPair::from_secret_bytes(&identity_secret),
            certificate: DeviceCertificate::from_bytes(stored.certificate.clone()),
            server_url: stored.server_url.clone(),
        };
        zeroize::Zeroize::zeroize(&mut device_secret);
        zeroize::Zeroize::zeroize(&mut identity_secret);
        Ok(account)
    }

    fn to_stored(&self) -> StoredAccount {
        StoredAccount {
            handle: self.handle.clone(),
            device_id: self.device_id,
            device_secret: self.device_key.to_secret_bytes().to_vec(),
            identity_secret: self.identity.to_secret_bytes().to_vec(),
            certificate: self.certificate.as_bytes().to_vec(),
            server_url: self.server_url.clone(),
        }
    }

    pub(crate) fn signer(&self) -> DeviceSigner<'_> {
        DeviceSigner(&self.device_key)
    }

    pub(crate) fn credential(&self) -> CredentialWithKey {
        credential_with_key(&self.certificate, &self.device_key.public())
    }
}

/// One device's client core: holds all protocol state (in its encrypted local store) and turns
/// intents into messages for the server and incoming envelopes into [`crate::Event`]s. It does no
/// network I/O.
///
/// The groups it has used stay loaded in memory (up to [`CoreConfig::cached_groups`]); the
/// store is the durable copy, written in each operation's transaction. Several `Device`s (or
/// processes) may open the same store file: each notices the others' commits and reloads.
pub struct Device {
    pub(crate) store: LocalStore,
    pub(crate) crypto: RustCrypto,
    pub(crate) config: CoreConfig,
    pub(crate) account: Option<Account>,
    pub(crate) groups: GroupCache,
    pub(crate) certs: CertCache,
}

/// What a new device needs to register with the server.
#[derive(Clone, Debug)]
pub struct Registration {
    /// The user's handle.
    pub handle: String,
    /// The device's id.
    pub device_id: u64,
    /// The user's identity public key.
    pub identity_key: PublicKey,
    /// The device's certificate.
    pub certificate: DeviceCertificate,
}

impl Device {
    /// Opens a device profile's store (which may hold no account yet).
    pub fn open(store: LocalStore, config: CoreConfig) -> Result<Self> {
        let mut device = Device {
            store,
            crypto: RustCrypto::default(),
            groups: GroupCache::new(config.cached_groups),
            config,
            account: None,
            certs: CertCache::default(),
        };
        let stored: Option<StoredAccount> = device.store.transaction(|tx| {
            crate::upgrade::counters_and_outbox(tx)?;
            Ok::<_, CoreError>(tx.get_json(Namespace::Meta, META_ACCOUNT)?)
        })?;
        device.account = stored.as_ref().map(Account::from_stored).transpose()?;
        Ok(device)
    }

    /// Creates a new user: a fresh identity key and this device's key and certificate, saved
    /// in the store. Register it with the server using [`Device::registration`].
    pub fn create_account(&mut self, handle: &str, server_url: &str) -> Result<Registration> {
        if let Some(existing) = &self.account {
            return Err(CoreError::AccountExists(existing.handle.clone()));
        }
        if !is_valid_handle(handle) {
            return Err(CoreError::InvalidHandle(handle.to_owned()));
        }
        let identity = IdentityKeyPair::generate();
        let device_key = DeviceKeyPair::generate();
        let device_id = rand::random::<u64>();
        let certificate =
            DeviceCertificate::issue(&identity, handle, device_id, &device_key.public(), now_ms());
        self.install_account(Account {
            handle: handle.to_owned(),
            device_id,
            device_key,
            identity,
            certificate,
            server_url: server_url.to_owned(),
        })
    }

    /// Installs an account received through device linking (see [`crate::link`]).
    pub(crate) fn install_account(&mut self, account: Account) -> Result<Registration> {
        let stored = account.to_stored();
        let own_pin = Pin {
            handle: account.handle.clone(),
            identity_key: account.identity.public().to_bytes().to_vec(),
            pinned_at_ms: now_ms(),
        };
        self.store.transaction(|tx| -> Result<()> {
            tx.put_json(Namespace::Meta, META_ACCOUNT, &stored)?;
            tx.put_json(Namespace::Contact, own_pin.handle.as_bytes(), &own_pin)?;
            Ok(())
        })?;
        self.account = Some(account);
        self.registration()
    }

    pub(crate) fn account(&self) -> Result<&Account> {
        self.account.as_ref().ok_or(CoreError::NoAccount)
    }

    /// What the server needs to register this device.
    pub fn registration(&self) -> Result<Registration> {
        let a = self.account()?;
        Ok(Registration {
            handle: a.handle.clone(),
            device_id: a.device_id,
            identity_key: a.identity.public(),
            certificate: a.certificate.clone(),
        })
    }

    /// Whether this profile holds an account.
    pub fn has_account(&self) -> bool {
        self.account.is_some()
    }

    /// This device's handle.
    pub fn handle(&self) -> Result<&str> {
        Ok(&self.account()?.handle)
    }

    /// This device's id.
    pub fn device_id(&self) -> Result<u64> {
        Ok(self.account()?.device_id)
    }

    /// The server this profile talks to.
    pub fn server_url(&self) -> Result<&str> {
        Ok(&self.account()?.server_url)
    }

    /// Signs the server's authentication challenge.
    pub fn sign_auth(&self, nonce: &[u8]) -> Result<[u8; 64]> {
        let a = self.account()?;
        Ok(tacit_identity::sign_auth(
            &a.device_key,
            nonce,
            &a.handle,
            a.device_id,
        ))
    }

    /// Creates `count` one-time KeyPackages (their private keys are kept in the store) and
    /// returns their RFC 9420 encodings for upload.
    pub fn new_key_packages(&mut self, count: usize) -> Result<Vec<Vec<u8>>> {
        self.build_key_packages(count, false)
    }

    /// Creates a last-resort KeyPackage (reusable; used when one-time ones run out).
    pub fn new_last_resort_key_package(&mut self) -> Result<Vec<u8>> {
        self.build_key_packages(1, true)?
            .pop()
            .ok_or_else(|| CoreError::Invalid("no KeyPackage built".into()))
    }

    fn build_key_packages(&mut self, count: usize, last_resort: bool) -> Result<Vec<Vec<u8>>> {
        self.op(|op| {
            let (config, provider) = (op.config, op.provider());
            let account = op.account()?;
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                // Every leaf declares the last-resort extension, so that last-resort KeyPackages
                // validate and one-time ones look the same.
                let capabilities = Capabilities::builder()
                    .extensions(vec![ExtensionType::LastResort])
                    .build();
                let mut builder = KeyPackage::builder().leaf_node_capabilities(capabilities);
                if last_resort {
                    builder = builder.mark_as_last_resort();
                }
                let bundle = builder
                    .build(
                        config.ciphersuite,
                        &provider,
                        &account.signer(),
                        account.credential(),
                    )
                    .map_err(mls)?;
                out.push(bundle.key_package().tls_serialize_detached().map_err(mls)?);
            }
            Ok(out)
        })
    }

    /// Pins `handle`'s identity key on first sight (trust on first use). A different key than
    /// the pinned one is refused with [`CoreError::IdentityChanged`] and never used.
    pub fn pin_identity(&mut self, handle: &str, identity_key: &[u8]) -> Result<PublicKey> {
        self.store
            .transaction(|tx| pin_in(tx, handle, identity_key))
    }

    /// The identity key pinned for `handle`, if any.
    pub fn pinned_identity(&mut self, handle: &str) -> Result<Option<PublicKey>> {
        self.store.transaction(|tx| pinned_in(tx, handle))
    }

    /// The safety number between this user and `handle` (whose key must be pinned).
    pub fn safety_number(&mut self, handle: &str) -> Result<SafetyNumber> {
        let theirs = self
            .pinned_identity(handle)?
            .ok_or_else(|| CoreError::UnknownIdentities(vec![handle.to_owned()]))?;
        let a = self.account()?;
        Ok(SafetyNumber::compute(
            &a.handle,
            &a.identity.public(),
            handle,
            &theirs,
        ))
    }

    /// Issues a certificate for a new device of this user (device linking).
    pub(crate) fn certify_device(
        &self,
        device_key: &PublicKey,
        device_id: u64,
    ) -> Result<DeviceCertificate> {
        let a = self.account()?;
        Ok(DeviceCertificate::issue(
            &a.identity,
            &a.handle,
            device_id,
            device_key,
            now_ms(),
        ))
    }
}

/// Pins or checks a pin inside a transaction.
pub(crate) fn pin_in(tx: &StoreTx<'_>, handle: &str, identity_key: &[u8]) -> Result<PublicKey> {
    let offered = PublicKey::from_bytes(identity_key).map_err(|e| CoreError::Malformed {
        what: "identity key",
        reason: e.to_string(),
    })?;
    match pinned_in(tx, handle)? {
        Some(pinned) if pinned == offered => Ok(pinned),
        Some(pinned) => Err(CoreError::IdentityChanged {
            handle: handle.to_owned(),
            pinned: pinned.to_hex(),
            offered: offered.to_hex(),
        }),
        None => {
            let pin = Pin {
                handle: handle.to_owned(),
                identity_key: offered.to_bytes().to_vec(),
                pinned_at_ms: now_ms(),
            };
            tx.put_json(Namespace::Contact, handle.as_bytes(), &pin)?;
            Ok(offered)
        }
    }
}

/// Reads a pin inside a transaction.
pub(crate) fn pinned_in(tx: &StoreTx<'_>, handle: &str) -> Result<Option<PublicKey>> {
    let pin: Option<Pin> = tx.get_json(Namespace::Contact, handle.as_bytes())?;
    pin.map(|p| {
        PublicKey::from_bytes(&p.identity_key).map_err(|e| CoreError::Malformed {
            what: "pinned identity key",
            reason: e.to_string(),
        })
    })
    .transpose()
}
