//! Privileges and roles after the DMTF Privilege Registry (Redfish_1.8.0_PrivilegeRegistry).

use serde::{Deserialize, Serialize};

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Privilege {
    Login,
    ConfigureManager,
    ConfigureUsers,
    ConfigureComponents,
    ConfigureSelf,
}

impl Privilege {
    pub const ALL: [Privilege; 5] = [
        Privilege::Login,
        Privilege::ConfigureManager,
        Privilege::ConfigureUsers,
        Privilege::ConfigureComponents,
        Privilege::ConfigureSelf,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Privilege::Login => "Login",
            Privilege::ConfigureManager => "ConfigureManager",
            Privilege::ConfigureUsers => "ConfigureUsers",
            Privilege::ConfigureComponents => "ConfigureComponents",
            Privilege::ConfigureSelf => "ConfigureSelf",
        }
    }
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of privileges held by a principal.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PrivSet(u8);

impl PrivSet {
    pub fn of(list: &[Privilege]) -> Self {
        PrivSet(list.iter().fold(0, |a, p| a | p.bit()))
    }
    pub fn has(self, p: Privilege) -> bool {
        self.0 & p.bit() != 0
    }
    pub fn contains_all(self, list: &[Privilege]) -> bool {
        list.iter().all(|p| self.has(*p))
    }
    pub fn list(self) -> Vec<Privilege> {
        Privilege::ALL.iter().copied().filter(|p| self.has(*p)).collect()
    }
}

/// A privilege requirement: satisfied when the principal holds every privilege of at least one
/// of the alternatives (the registry's OperationMap: an OR of ANDs). `NoAuth` is `None`.
#[derive(Copy, Clone, Debug)]
pub enum Requirement {
    NoAuth,
    AnyOf(&'static [&'static [Privilege]]),
}

impl Requirement {
    pub fn satisfied_by(&self, held: PrivSet) -> bool {
        match self {
            Requirement::NoAuth => true,
            Requirement::AnyOf(alts) => alts.iter().any(|all| held.contains_all(all)),
        }
    }
}

use Privilege::*;
/// The common requirement shapes, named as the registry writes them.
pub const LOGIN: Requirement = Requirement::AnyOf(&[&[Login]]);
pub const CONFIGURE_MANAGER: Requirement = Requirement::AnyOf(&[&[ConfigureManager]]);
pub const CONFIGURE_USERS: Requirement = Requirement::AnyOf(&[&[ConfigureUsers]]);
pub const CONFIGURE_COMPONENTS: Requirement = Requirement::AnyOf(&[&[ConfigureComponents]]);
pub const MANAGER_OR_SELF: Requirement = Requirement::AnyOf(&[&[ConfigureManager], &[ConfigureSelf]]);
pub const USERS_OR_SELF: Requirement = Requirement::AnyOf(&[&[ConfigureUsers], &[ConfigureSelf]]);
pub const MANAGER_USERS_OR_SELF: Requirement =
    Requirement::AnyOf(&[&[ConfigureManager], &[ConfigureUsers], &[ConfigureSelf]]);
pub const MANAGER_OR_COMPONENTS: Requirement = Requirement::AnyOf(&[&[ConfigureManager], &[ConfigureComponents]]);

/// The three predefined roles of DSP0266 §13.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RoleDef {
    pub id: &'static str,
    pub description: &'static str,
    pub privileges: &'static [Privilege],
}

pub const ROLES: &[RoleDef] = &[
    RoleDef {
        id: "Administrator",
        description: "Full control of the service, its accounts and the machine.",
        privileges: &[Login, ConfigureManager, ConfigureUsers, ConfigureSelf, ConfigureComponents],
    },
    RoleDef {
        id: "Operator",
        description: "Operates the machine: reads everything and configures components.",
        privileges: &[Login, ConfigureSelf, ConfigureComponents],
    },
    RoleDef {
        id: "ReadOnly",
        description: "Reads the service and changes only its own password.",
        privileges: &[Login, ConfigureSelf],
    },
];

pub fn role(id: &str) -> Option<&'static RoleDef> {
    ROLES.iter().find(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn or_of_ands() {
        let ro = PrivSet::of(role("ReadOnly").unwrap().privileges);
        assert!(LOGIN.satisfied_by(ro));
        assert!(!CONFIGURE_USERS.satisfied_by(ro));
        assert!(USERS_OR_SELF.satisfied_by(ro));
        assert!(!MANAGER_OR_COMPONENTS.satisfied_by(ro));
        let op = PrivSet::of(role("Operator").unwrap().privileges);
        assert!(MANAGER_OR_COMPONENTS.satisfied_by(op));
        assert!(!CONFIGURE_MANAGER.satisfied_by(op));
        assert!(Requirement::NoAuth.satisfied_by(PrivSet::default()));
    }
}
