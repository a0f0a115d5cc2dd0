//! keeld: Keel's Redfish service. See README.md for the architecture.

pub mod app;
pub mod auth;
pub mod crypt;
pub mod events;
pub mod host;
pub mod html;
pub mod inventory;
pub mod messages;
pub mod openapi;
pub mod power;
pub mod privilege;
pub mod protocol;
pub mod server;
pub mod slots;
pub mod store;
pub mod tasks;
pub mod tls;
pub mod tpm;
pub mod tree;
pub mod types;
pub mod update;
