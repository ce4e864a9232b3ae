//! One client operation: a store transaction, the groups it works on, and what it may use.
//!
//! Every [`Device`] method that touches the store runs as one [`Op`]: one local-store
//! transaction, with MLS groups taken from the device's [`GroupCache`] (or loaded from the
//! store) on first use and handed back only if the transaction commits.
//!
//! [`GroupCache`]: crate::groups::GroupCache

use openmls_rust_crypto::RustCrypto;

use crate::config::CoreConfig;
use crate::credential::CertCache;
use crate::device::{Account, Device};
use crate::error::{CoreError, Result};
use crate::groups::Groups;
use crate::store::{StoreTx, TxProvider};

/// What one operation works with.
pub(crate) struct Op<'a> {
    /// The operation's transaction.
    pub tx: &'a StoreTx<'a>,
    pub crypto: &'a RustCrypto,
    pub config: &'a CoreConfig,
    account: Option<&'a Account>,
    /// The MLS groups, taken from the cache or loaded on first use.
    pub groups: Groups<'a>,
    /// Certificates already verified.
    pub certs: &'a CertCache,
}

impl<'a> Op<'a> {
    /// The device's account (an error if the profile has none yet).
    pub(crate) fn account(&self) -> Result<&'a Account> {
        self.account.ok_or(CoreError::NoAccount)
    }

    /// An OpenMLS provider bound to the operation's transaction.
    pub(crate) fn provider(&self) -> TxProvider<'a> {
        self.tx.provider(self.crypto)
    }
}

impl Device {
    /// Runs `f` as one operation, in one transaction: committed if it returns Ok, rolled back
    /// (nothing kept, in the store or in the group cache) if it returns Err or panics.
    pub(crate) fn op<T>(&mut self, f: impl FnOnce(&mut Op<'_>) -> Result<T>) -> Result<T> {
        self.run_op(true, f)
    }

    /// Runs `f` as one operation whose transaction is always rolled back: nothing it does is
    /// kept, and the groups it used are dropped from the cache.
    pub(crate) fn dry_op<T>(&mut self, f: impl FnOnce(&mut Op<'_>) -> Result<T>) -> Result<T> {
        self.run_op(false, f)
    }

    fn run_op<T>(&mut self, keep: bool, f: impl FnOnce(&mut Op<'_>) -> Result<T>) -> Result<T> {
        let Device {
            store,
            crypto,
            config,
            account,
            groups,
            certs,
        } = self;
        let mut taken = None;
        let run = |tx: &StoreTx<'_>| -> Result<T> {
            let mut op = Op {
                tx,
                crypto,
                config,
                account: account.as_ref(),
                groups: groups.lend(tx.generation()),
                certs,
            };
            let result = f(&mut op);
            taken = Some(op.groups.into_taken());
            result
        };
        let result = if keep {
            store.transaction(run)
        } else {
            store.dry_run(run)
        };
        if let (true, Ok(_), Some(taken)) = (keep, &result, taken) {
            groups.give_back(taken);
        }
        result
    }
}
