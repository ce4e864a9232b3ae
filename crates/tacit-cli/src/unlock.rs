//! Opening a device profile: where it lives and how its passphrase is obtained.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tacit_client::profile::{KeyMode, Profile, Unlock};
use tacit_client::{Client, TlsOptions};
use tacit_core::{CoreConfig, Device};
use zeroize::Zeroizing;

use crate::args::Global;

/// The profile directory: `--profile`, `TACIT_PROFILE`, or `~/.tacit`.
pub fn profile_dir(global: &Global) -> anyhow::Result<PathBuf> {
    if let Some(p) = &global.profile {
        return Ok(p.clone());
    }
    let home = std::env::var_os("HOME").context("no --profile given and $HOME is not set")?;
    Ok(PathBuf::from(home).join(".tacit"))
}

/// The passphrase from `TACIT_PASSPHRASE`, else a prompt if standard input is a terminal.
/// Never prompts otherwise.
pub fn passphrase(confirm: bool) -> anyhow::Result<Unlock> {
    if let Ok(p) = std::env::var("TACIT_PASSPHRASE") {
        return Ok(Unlock::Passphrase(Zeroizing::new(p)));
    }
    if !std::io::stdin().is_terminal() {
        return Ok(Unlock::None);
    }
    let first = Zeroizing::new(rpassword::prompt_password("Passphrase for this profile: ")?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("Repeat the passphrase: ")?);
        if *first != *again {
            bail!("the passphrases do not match");
        }
        if first.len() < 8 {
            bail!("use a passphrase of at least 8 characters");
        }
    }
    Ok(Unlock::Passphrase(first))
}

/// TLS options from `--ca-cert`.
pub fn tls(global: &Global) -> anyhow::Result<TlsOptions> {
    let mut tls = TlsOptions::default();
    if let Some(path) = &global.ca_cert {
        tls.extra_roots_pem
            .push(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?);
    }
    Ok(tls)
}

/// Opens an existing profile as a client.
pub fn open_client(global: &Global) -> anyhow::Result<Client> {
    let dir = profile_dir(global)?;
    open_client_at(&dir, global)
}

fn open_client_at(dir: &Path, global: &Global) -> anyhow::Result<Client> {
    let unlock = match Profile::key_mode(dir)? {
        KeyMode::KeyFile => Unlock::None,
        KeyMode::Passphrase => passphrase(false)?,
    };
    let (_, store) = Profile::open(dir, &unlock)?;
    let device = Device::open(store, CoreConfig::default())?;
    if !device.has_account() {
        bail!("the profile in {} has no account yet: run `tacit account create` or `tacit device join`", dir.display());
    }
    Ok(Client::new(device, tls(global)?))
}

/// Creates a new, empty profile as a client.
pub fn create_client(global: &Global, key_file: bool) -> anyhow::Result<Client> {
    let dir = profile_dir(global)?;
    let (mode, unlock) = if key_file {
        (KeyMode::KeyFile, Unlock::None)
    } else {
        (KeyMode::Passphrase, passphrase(true)?)
    };
    let (_, store) = Profile::create(&dir, mode, &unlock)?;
    let device = Device::open(store, CoreConfig::default())?;
    Ok(Client::new(device, tls(global)?))
}
