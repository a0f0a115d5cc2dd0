//! Updates as the Redfish UpdateService drives them: a bundle from a source, written by the slot
//! engine (`crate::slots`) on its own thread, reported through a Task; activation by ApplyTime.

pub mod source;
