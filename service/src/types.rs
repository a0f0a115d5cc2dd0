//! The Redfish schema versions keeld implements: one place, used for `@odata.type`, the
//! `Link: rel=describedby` header, the JsonSchemas collection, `$metadata` and OpenAPI.

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RfType {
    /// Schema namespace, e.g. `ManagerAccount`.
    pub name: &'static str,
    /// Version of the newest schema we conform to, e.g. `v1_14_1`; `None` for collections.
    pub version: Option<&'static str>,
    /// The entity type inside the namespace (differs from `name` for actions' ActionInfo etc).
    pub entity: &'static str,
}

impl RfType {
    pub const fn new(name: &'static str, version: &'static str) -> Self {
        RfType { name, version: Some(version), entity: name }
    }
    pub const fn collection(name: &'static str) -> Self {
        RfType { name, version: None, entity: name }
    }
    pub fn odata_type(&self) -> String {
        match self.version {
            Some(v) => format!("#{}.{}.{}", self.name, v, self.entity),
            None => format!("#{}.{}", self.name, self.entity),
        }
    }
    /// The versioned schema file name as DMTF publishes it.
    pub fn file(&self) -> String {
        match self.version {
            Some(v) => format!("{}.{}", self.name, v),
            None => self.name.to_string(),
        }
    }
    /// Where DMTF publishes the JSON Schema.
    pub fn json_schema_uri(&self) -> String {
        format!("https://redfish.dmtf.org/schemas/v1/{}.json", self.file())
    }
    /// Where DMTF publishes the CSDL.
    pub fn csdl_uri(&self) -> String {
        format!("https://redfish.dmtf.org/schemas/v1/{}_v1.xml", self.name)
    }
}

macro_rules! types {
    ($($c:ident = $e:expr;)*) => {
        $(pub const $c: RfType = $e;)*
        /// Every type the service can return.
        pub const ALL: &[RfType] = &[$($c),*];
    };
}

types! {
    SERVICE_ROOT = RfType::new("ServiceRoot", "v1_20_0");
    SESSION_SERVICE = RfType::new("SessionService", "v1_2_0");
    SESSION = RfType::new("Session", "v1_8_0");
    SESSION_COLLECTION = RfType::collection("SessionCollection");
    ACCOUNT_SERVICE = RfType::new("AccountService", "v1_18_1");
    MANAGER_ACCOUNT = RfType::new("ManagerAccount", "v1_14_1");
    MANAGER_ACCOUNT_COLLECTION = RfType::collection("ManagerAccountCollection");
    ROLE = RfType::new("Role", "v1_3_3");
    ROLE_COLLECTION = RfType::collection("RoleCollection");
    EVENT_SERVICE = RfType::new("EventService", "v1_12_0");
    EVENT_DESTINATION = RfType::new("EventDestination", "v1_16_0");
    EVENT_DESTINATION_COLLECTION = RfType::collection("EventDestinationCollection");
    EVENT = RfType::new("Event", "v1_13_0");
    MESSAGE_REGISTRY_FILE = RfType::new("MessageRegistryFile", "v1_1_5");
    MESSAGE_REGISTRY_FILE_COLLECTION = RfType::collection("MessageRegistryFileCollection");
    JSON_SCHEMA_FILE = RfType::new("JsonSchemaFile", "v1_1_5");
    JSON_SCHEMA_FILE_COLLECTION = RfType::collection("JsonSchemaFileCollection");
    MANAGER = RfType::new("Manager", "v1_24_0");
    MANAGER_COLLECTION = RfType::collection("ManagerCollection");
    MANAGER_NETWORK_PROTOCOL = RfType::new("ManagerNetworkProtocol", "v1_12_0");
    COMPUTER_SYSTEM = RfType::new("ComputerSystem", "v1_27_0");
    COMPUTER_SYSTEM_COLLECTION = RfType::collection("ComputerSystemCollection");
    CHASSIS = RfType::new("Chassis", "v1_28_0");
    CHASSIS_COLLECTION = RfType::collection("ChassisCollection");
    ACTION_INFO = RfType::new("ActionInfo", "v1_5_0");
    PROCESSOR = RfType::new("Processor", "v1_22_0");
    PROCESSOR_COLLECTION = RfType::collection("ProcessorCollection");
    MEMORY = RfType::new("Memory", "v1_23_0");
    MEMORY_COLLECTION = RfType::collection("MemoryCollection");
    UPDATE_SERVICE = RfType::new("UpdateService", "v1_17_0");
    SENSOR = RfType::new("Sensor", "v1_12_0");
    PCIE_DEVICE = RfType::new("PCIeDevice", "v1_21_0");
    PCIE_DEVICE_COLLECTION = RfType::collection("PCIeDeviceCollection");
    PCIE_FUNCTION = RfType::new("PCIeFunction", "v1_7_0");
    PCIE_FUNCTION_COLLECTION = RfType::collection("PCIeFunctionCollection");
    LOG_SERVICE = RfType::new("LogService", "v1_9_0");
    LOG_SERVICE_COLLECTION = RfType::collection("LogServiceCollection");
    LOG_ENTRY = RfType::new("LogEntry", "v1_21_0");
    LOG_ENTRY_COLLECTION = RfType::collection("LogEntryCollection");
    SENSOR_COLLECTION = RfType::collection("SensorCollection");
    THERMAL_SUBSYSTEM = RfType::new("ThermalSubsystem", "v1_5_0");
    THERMAL_METRICS = RfType::new("ThermalMetrics", "v1_3_2");
    FAN = RfType::new("Fan", "v1_6_0");
    FAN_COLLECTION = RfType::collection("FanCollection");
    POWER_SUBSYSTEM = RfType::new("PowerSubsystem", "v1_1_3");
    BOOT_OPTION = RfType::new("BootOption", "v1_0_6");
    BOOT_OPTION_COLLECTION = RfType::collection("BootOptionCollection");
    POWER_SUPPLY = RfType::new("PowerSupply", "v1_6_0");
    POWER_SUPPLY_COLLECTION = RfType::collection("PowerSupplyCollection");
    SOFTWARE_INVENTORY = RfType::new("SoftwareInventory", "v1_13_0");
    SOFTWARE_INVENTORY_COLLECTION = RfType::collection("SoftwareInventoryCollection");
    STORAGE = RfType::new("Storage", "v1_21_0");
    STORAGE_COLLECTION = RfType::collection("StorageCollection");
    STORAGE_CONTROLLER = RfType::new("StorageController", "v1_11_0");
    STORAGE_CONTROLLER_COLLECTION = RfType::collection("StorageControllerCollection");
    DRIVE = RfType::new("Drive", "v1_22_0");
    DRIVE_COLLECTION = RfType::collection("DriveCollection");
    ENVIRONMENT_METRICS = RfType::new("EnvironmentMetrics", "v1_5_0");
    VOLUME = RfType::new("Volume", "v1_10_2");
    VOLUME_COLLECTION = RfType::collection("VolumeCollection");
    ETHERNET_INTERFACE = RfType::new("EthernetInterface", "v1_12_4");
    ETHERNET_INTERFACE_COLLECTION = RfType::collection("EthernetInterfaceCollection");
    NETWORK_ADAPTER = RfType::new("NetworkAdapter", "v1_14_0");
    NETWORK_ADAPTER_COLLECTION = RfType::collection("NetworkAdapterCollection");
    PORT = RfType::new("Port", "v1_18_0");
    PORT_COLLECTION = RfType::collection("PortCollection");
    SECURE_BOOT = RfType::new("SecureBoot", "v1_1_2");
    SECURE_BOOT_DATABASE = RfType::new("SecureBootDatabase", "v1_0_3");
    SECURE_BOOT_DATABASE_COLLECTION = RfType::collection("SecureBootDatabaseCollection");
    CERTIFICATE = RfType::new("Certificate", "v1_11_0");
    CERTIFICATE_COLLECTION = RfType::collection("CertificateCollection");
    SIGNATURE = RfType::new("Signature", "v1_0_3");
    SIGNATURE_COLLECTION = RfType::collection("SignatureCollection");
    COMPONENT_INTEGRITY = RfType::new("ComponentIntegrity", "v1_3_2");
    COMPONENT_INTEGRITY_COLLECTION = RfType::collection("ComponentIntegrityCollection");
    TRUSTED_COMPONENT = RfType::new("TrustedComponent", "v1_4_0");
    TRUSTED_COMPONENT_COLLECTION = RfType::collection("TrustedComponentCollection");
    TASK_SERVICE = RfType::new("TaskService", "v1_3_0");
    TASK = RfType::new("Task", "v1_7_4");
    TASK_COLLECTION = RfType::collection("TaskCollection");
}

/// Keel's own OEM schema (CSDL and JSON Schema in `schemas/`, served at `/redfish/v1/schema/`).
pub const KEEL_OEM_NAMESPACE: &str = "KeelManager";
pub const KEEL_OEM_VERSION: &str = "v1_0_0";
/// Every Keel OEM schema: (namespace, version, the type its `Oem.Keel` objects carry).
pub const KEEL_OEM_SCHEMAS: &[(&str, &str, &str)] = &[
    (KEEL_OEM_NAMESPACE, KEEL_OEM_VERSION, "Manager"),
    ("KeelComputerSystem", "v1_0_0", "ComputerSystem"),
    ("KeelVolume", "v1_0_0", "Volume"),
    ("KeelUpdateService", "v1_0_0", "UpdateService"),
];

pub fn by_name(name: &str) -> Option<RfType> {
    ALL.iter().copied().find(|t| t.name == name)
}
