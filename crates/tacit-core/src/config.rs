//! Protocol parameters of the client core, each with a default chosen on purpose.

use openmls::prelude::{Ciphersuite, SenderRatchetConfiguration};

/// Parameters for every MLS group this device creates or joins.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// MLS ciphersuite. Default: MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519. A post-quantum
    /// hybrid suite can be selected here once the crypto provider supports it.
    pub ciphersuite: Ciphersuite,
    /// How many past epochs' message secrets are kept, so that late messages still decrypt.
    pub max_past_epochs: usize,
    /// How many out-of-order messages per sender are tolerated within an epoch.
    pub out_of_order_tolerance: u32,
    /// How far ahead (in generations) a sender's message may be and still decrypt.
    pub maximum_forward_distance: u32,
    /// Target stock of one-time KeyPackages on the server.
    pub key_package_stock: u32,
    /// Top the stock up when fewer than this remain.
    pub key_package_low_watermark: u32,
    /// How many conversations' MLS groups stay loaded in memory between operations (the least
    /// recently used is dropped first; 0 loads every group from the store each time). A group
    /// of 1,000 members takes a few MB.
    pub cached_groups: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            ciphersuite: Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
            max_past_epochs: 5,
            out_of_order_tolerance: 200,
            maximum_forward_distance: 5_000,
            key_package_stock: 20,
            key_package_low_watermark: 8,
            cached_groups: 32,
        }
    }
}

impl CoreConfig {
    pub(crate) fn sender_ratchet(&self) -> SenderRatchetConfiguration {
        SenderRatchetConfiguration::new(self.out_of_order_tolerance, self.maximum_forward_distance)
    }
}
