//! Load generators for Tacit, run as `tacit bench ...`.
//!
//! [`relay`] (`tacit bench relay`) drives a Tacit server — started in this process on loopback,
//! or named by URL — from pairs of raw protocol clients, and runs the same load, in the same run
//! and on the same runtime, against a minimal WebSocket relay written for the benchmark only,
//! so that Tacit's delivered messages per second come with a ratio to what
//! plain forwarding achieves on the same machine. The clients speak the wire protocol directly
//! (real Ed25519 identities and device certificates, opaque fake MLS payloads): the server never
//! parses MLS, so this isolates the server.
//!
//! [`connections`] (`tacit bench connections`) opens many authenticated idle connections to one
//! Tacit server from several loopback source addresses and reports how fast they open and what
//! each costs in resident memory.
//!
//! The crate owns no server logic; it only links `tacit-server` to start nodes in process.
#![forbid(unsafe_code)]

pub mod connections;
pub mod error;
pub mod relay;

pub use connections::ConnectionsArgs;
pub use error::BenchError;
pub use relay::RelayArgs;
