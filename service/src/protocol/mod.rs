//! The OData/Redfish protocol rules that do not depend on the resource tree.
pub mod body;
pub mod query;
