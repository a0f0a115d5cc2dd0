//! qemu-tests: the Keel image booted under QEMU with OVMF Secure Boot and a swtpm TPM, tested
//! through keeld's Redfish API. The scenarios are in tests/scenarios.rs; qemu-tests/run.sh runs
//! them.
pub mod accel;
pub mod image;
pub mod machine;
pub mod netns;
pub mod record;
pub mod redfish;
pub mod tools;
