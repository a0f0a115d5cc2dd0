//! Redfish messages (Base, ResourceEvent, TaskEvent and Update registries) and the extended error
//! type.
//!
//! The message texts are those of the DMTF registries the service advertises under
//! `/redfish/v1/Registries`; `tests/registries.rs` checks every entry here against the
//! published registry files so a typo or a wrong argument count cannot slip in.

use actix_web::http::StatusCode;
use serde_json::{json, Value};

/// Registry versions the service speaks. MessageIds carry `Major.Minor` (DSP0266 §9.5.11.2).
pub const BASE_REGISTRY: &str = "Base.1.22.1";
pub const BASE_PREFIX: &str = "Base.1.22";
pub const RESOURCE_EVENT_REGISTRY: &str = "ResourceEvent.1.4.3";
pub const RESOURCE_EVENT_PREFIX: &str = "ResourceEvent.1.4";
pub const TASK_EVENT_REGISTRY: &str = "TaskEvent.1.0.5";
pub const TASK_EVENT_PREFIX: &str = "TaskEvent.1.0";
pub const UPDATE_REGISTRY: &str = "Update.1.3.0";
pub const UPDATE_PREFIX: &str = "Update.1.3";

/// One registry entry: key, message template (`%1`…), severity, resolution.
#[derive(Debug)]
pub struct MessageDef {
    pub key: &'static str,
    pub text: &'static str,
    pub severity: &'static str,
    pub resolution: &'static str,
}

/// A registry's messages (`ALL` lists them for the registry test); without a resolution, "None.".
macro_rules! registry {
    ($($name:ident = ($key:literal, $text:literal, $sev:literal, $res:literal);)*) => {
        $(pub const $name: MessageDef = MessageDef { key: $key, text: $text, severity: $sev, resolution: $res };)*
        pub const ALL: &[&MessageDef] = &[$(&$name),*];
    };
    ($($name:ident = ($key:literal, $text:literal, $sev:literal);)*) => {
        registry! { $($name = ($key, $text, $sev, "None.");)* }
    };
}

/// The Base registry messages keeld emits.
pub mod base {
    use super::MessageDef;
    registry! {
        SUCCESS = ("Success", "The request completed successfully.", "OK", "None.");
        CREATED = ("Created", "The resource was created successfully.", "OK", "None.");
        GENERAL_ERROR = ("GeneralError", "A general error has occurred.  See Resolution for information on how to resolve the error, or @Message.ExtendedInfo if Resolution is not provided.", "Critical", "None.");
        INTERNAL_ERROR = ("InternalError", "The request failed due to an internal service error.  The service is still operational.", "Critical", "Resubmit the request.  If the problem persists, consider resetting the service.");
        NO_VALID_SESSION = ("NoValidSession", "There is no valid session established with the implementation.", "Critical", "Establish a session before attempting any operations.");
        ACCESS_UNAUTHORIZED = ("AccessUnauthorized", "Unauthorized.", "Critical", "Resubmit the request with valid credentials.");
        ACCESS_DENIED = ("AccessDenied", "While attempting to establish a connection to '%1', the service denied access.", "Critical", "Attempt to ensure that the URI is correct and that the service has the appropriate credentials.");
        INSUFFICIENT_PRIVILEGE = ("InsufficientPrivilege", "There are insufficient privileges for the account or credentials associated with the current session to perform the requested operation.", "Critical", "Either abandon the operation or change the associated access rights and resubmit the request if the operation failed.");
        PASSWORD_CHANGE_REQUIRED = ("PasswordChangeRequired", "The password provided for this account must be changed before access is granted.  PATCH the Password property for this account located at the target URI '%1' to complete this process.", "Critical", "Change the password for this account using a PATCH to the Password property at the URI provided.");
        PASSWORD_INCORRECT_LENGTH = ("PasswordIncorrectLength", "The password provided for this account does not meet the password length requirements of the service.", "Critical", "Resubmit the request with a password that meets the password length requirements as specified by the `MinPasswordLength` and `MaxPasswordLength` properties in the `AccountService` resource.");
        PASSWORD_COMPLEXITY_NOT_MET = ("PasswordComplexityNotMet", "The password provided for this account does not meet the password complexity requirements of the service.", "Critical", "Resubmit the request with a password that meets the password complexity requirements as specified by the `PasswordGuidanceMessage` property in the `AccountService` resource.");
        RESOURCE_NOT_FOUND = ("ResourceNotFound", "The requested resource of type %1 named '%2' was not found.", "Critical", "Provide a valid resource identifier and resubmit the request.");
        RESOURCE_MISSING_AT_URI = ("ResourceMissingAtURI", "The resource at the URI '%1' was not found.", "Critical", "Place a valid resource at the URI or correct the URI and resubmit the request.");
        RESOURCE_ALREADY_EXISTS = ("ResourceAlreadyExists", "The requested resource of type %1 with the property %2 with the value '%3' already exists.", "Critical", "Do not repeat the create operation as the resource was already created.");
        RESOURCE_CANNOT_BE_DELETED = ("ResourceCannotBeDeleted", "The delete request failed because the resource requested cannot be deleted.", "Critical", "Do not attempt to delete a non-deletable resource.");
        RESOURCE_IN_USE = ("ResourceInUse", "The change to the requested resource failed because the resource is in use or in transition.", "Warning", "Remove the condition and resubmit the request if the operation failed.");
        RESOURCE_IN_STANDBY = ("ResourceInStandby", "The request could not be performed because the resource is in standby.", "Critical", "Ensure that the resource is in the correct power state and resubmit the request.");
        OPERATION_NOT_ALLOWED = ("OperationNotAllowed", "The HTTP method is not allowed on this resource.", "Critical", "None.");
        MALFORMED_JSON = ("MalformedJSON", "The request body submitted was malformed JSON and could not be parsed by the receiving service.", "Critical", "Ensure that the request body is valid JSON and resubmit the request.");
        EMPTY_JSON = ("EmptyJSON", "The request body submitted contained an empty JSON object and the service is unable to process it.", "Warning", "Add properties in the JSON object and resubmit the request.");
        UNRECOGNIZED_REQUEST_BODY = ("UnrecognizedRequestBody", "The service detected a malformed request body that it was unable to interpret.", "Warning", "Correct the request body and resubmit the request if it failed.");
        PAYLOAD_TOO_LARGE = ("PayloadTooLarge", "The supplied payload exceeds the maximum size supported by the service.", "Critical", "Check that the supplied payload is correct and supported by this service.");
        PROPERTY_UNKNOWN = ("PropertyUnknown", "The property %1 is not in the list of valid properties for the resource.", "Warning", "Remove the unknown property from the request body and resubmit the request if the operation failed.");
        PROPERTY_NOT_WRITABLE = ("PropertyNotWritable", "The property %1 is a read-only property and cannot be assigned a value.", "Warning", "Remove the property from the request body and resubmit the request if the operation failed.");
        PROPERTY_MISSING = ("PropertyMissing", "The property %1 is a required property and must be included in the request.", "Warning", "Ensure that the property is in the request body and has a valid value and resubmit the request if the operation failed.");
        PROPERTY_VALUE_TYPE_ERROR = ("PropertyValueTypeError", "The value '%1' for the property %2 is not a type that the property can accept.", "Warning", "Correct the value for the property in the request body and resubmit the request if the operation failed.");
        PROPERTY_VALUE_FORMAT_ERROR = ("PropertyValueFormatError", "The value '%1' for the property %2 is not a format that the property can accept.", "Warning", "Correct the value for the property in the request body and resubmit the request if the operation failed.");
        PROPERTY_VALUE_NOT_IN_LIST = ("PropertyValueNotInList", "The value '%1' for the property %2 is not in the list of acceptable values.", "Warning", "Choose a value from the enumeration list that the implementation can support and resubmit the request if the operation failed.");
        PROPERTY_VALUE_OUT_OF_RANGE = ("PropertyValueOutOfRange", "The value '%1' for the property %2 is not in the supported range of acceptable values.", "Warning", "Correct the value for the property in the request body and resubmit the request if the operation failed.");
        PROPERTY_VALUE_INCORRECT = ("PropertyValueIncorrect", "The property '%1' with the requested value of '%2' could not be written because the value is not acceptable for the property.", "Warning", "None.");
        STRING_VALUE_TOO_LONG = ("StringValueTooLong", "The string '%1' exceeds the length limit %2.", "Warning", "Resubmit the request with an appropriate string length.");
        CREATE_FAILED_MISSING_REQ_PROPERTIES = ("CreateFailedMissingReqProperties", "The create operation failed because the required property %1 was missing from the request.", "Critical", "Correct the body to include the required property with a valid value and resubmit the request if the operation failed.");
        ACTION_NOT_SUPPORTED = ("ActionNotSupported", "The action %1 is not supported by the resource.", "Critical", "Check the Actions property in the resource for the supported actions.");
        ACTION_PARAMETER_MISSING = ("ActionParameterMissing", "The action %1 requires the parameter %2 to be present in the request body.", "Critical", "Supply the action with the required parameter in the request body when the request is resubmitted.");
        ACTION_PARAMETER_UNKNOWN = ("ActionParameterUnknown", "The action %1 was submitted with the invalid parameter %2.", "Warning", "Correct the invalid action parameter and resubmit the request if the operation failed.");
        ACTION_PARAMETER_VALUE_TYPE_ERROR = ("ActionParameterValueTypeError", "The value '%1' for the parameter %2 in the action %3 is not a type that the parameter can accept.", "Warning", "Correct the value for the parameter in the request body and resubmit the request if the operation failed.");
        ACTION_PARAMETER_VALUE_NOT_IN_LIST = ("ActionParameterValueNotInList", "The value '%1' for the parameter %2 in the action %3 is not in the list of acceptable values.", "Warning", "Choose a value from the enumeration list that the implementation can support and resubmit the request if the operation failed.");
        ACTION_PARAMETER_VALUE_FORMAT_ERROR = ("ActionParameterValueFormatError", "The value '%1' for the parameter %2 in the action %3 is not a format that the parameter can accept.", "Warning", "Correct the value for the parameter in the request body and resubmit the request if the operation failed.");
        QUERY_NOT_SUPPORTED = ("QueryNotSupported", "Querying is not supported by the implementation.", "Warning", "Remove the query parameters and resubmit the request if the operation failed.");
        QUERY_NOT_SUPPORTED_ON_RESOURCE = ("QueryNotSupportedOnResource", "Querying is not supported on the requested resource.", "Warning", "Remove the query parameters and resubmit the request if the operation failed.");
        QUERY_PARAMETER_UNSUPPORTED = ("QueryParameterUnsupported", "Query parameter '%1' is not supported.", "Warning", "Correct or remove the query parameter and resubmit the request.");
        QUERY_COMBINATION_INVALID = ("QueryCombinationInvalid", "Two or more query parameters in the request cannot be used together.", "Warning", "Remove one or more of the query parameters and resubmit the request if the operation failed.");
        QUERY_PARAMETER_VALUE_TYPE_ERROR = ("QueryParameterValueTypeError", "The value '%1' for the query parameter %2 is not a type that the parameter can accept.", "Warning", "Correct the value for the query parameter in the request and resubmit the request if the operation failed.");
        QUERY_PARAMETER_VALUE_FORMAT_ERROR = ("QueryParameterValueFormatError", "The value '%1' for the parameter %2 is not a format that the parameter can accept.", "Warning", "Correct the value for the query parameter in the request and resubmit the request if the operation failed.");
        QUERY_PARAMETER_OUT_OF_RANGE = ("QueryParameterOutOfRange", "The value '%1' for the query parameter %2 is out of range %3.", "Warning", "Reduce the value for the query parameter to a value that is within range, such as a start or count value that is within bounds of the number of resources in a collection or a page number that is within the range of valid pages.");
        PRECONDITION_FAILED = ("PreconditionFailed", "The ETag supplied did not match the ETag required to change this resource.", "Critical", "Try the operation again using the appropriate ETag.");
        HEADER_INVALID = ("HeaderInvalid", "Header '%1' is invalid.", "Critical", "Resubmit the request with a valid request header.");
        SESSION_LIMIT_EXCEEDED = ("SessionLimitExceeded", "The session establishment failed due to the number of simultaneous sessions exceeding the limit of the implementation.", "Critical", "Reduce the number of other sessions before trying to establish the session or increase the limit of simultaneous sessions, if supported.");
        EVENT_SUBSCRIPTION_LIMIT_EXCEEDED = ("EventSubscriptionLimitExceeded", "The event subscription failed due to the number of simultaneous subscriptions exceeding the limit of the implementation.", "Critical", "Reduce the number of other subscriptions before trying to establish the event subscription or increase the limit of simultaneous subscriptions, if supported.");
        SERVICE_TEMPORARILY_UNAVAILABLE = ("ServiceTemporarilyUnavailable", "The service is temporarily unavailable.  Retry in %1 seconds.", "Critical", "Wait for the indicated retry duration and retry the operation.");
        SERVICE_SHUTTING_DOWN = ("ServiceShuttingDown", "The operation failed because the service is shutting down and can no longer take incoming requests.", "Critical", "When the service becomes available, resubmit the request if the operation failed.");
        ACCOUNT_REMOVED = ("AccountRemoved", "The account was successfully removed.", "OK", "None.");
        ACCOUNT_MODIFIED = ("AccountModified", "The account was successfully modified.", "OK", "None.");
        ACTION_PARAMETER_VALUE_ERROR = ("ActionParameterValueError", "The value for the parameter %1 in the action %2 is invalid.", "Warning", "Correct the value for the parameter in the request body and resubmit the request if the operation failed.");
        ACTION_PARAMETER_VALUE_CONFLICT = ("ActionParameterValueConflict", "The parameter '%1' with the requested value of '%2' does not meet the constraints of the implementation.", "Warning", "None.");
        RESET_REQUIRED = ("ResetRequired", "In order to apply changes, recover from errors, or complete the operation, a component reset is required with the Reset action URI '%1' and ResetType '%2'.", "Warning", "Perform the required reset action on the specified component.");
        NO_OPERATION = ("NoOperation", "The request body submitted contain no data to act upon and no changes to the resource took place.", "Warning", "Add properties in the JSON object and resubmit the request.");
    }
}

/// The ResourceEvent registry messages keeld emits as events.
pub mod resource_event {
    use super::MessageDef;
    registry! {
        RESOURCE_CREATED = ("ResourceCreated", "The resource was created successfully.", "OK");
        RESOURCE_REMOVED = ("ResourceRemoved", "The resource was removed successfully.", "OK");
        RESOURCE_CHANGED = ("ResourceChanged", "One or more resource properties have changed.", "OK");
        PROPERTY_VALUE_MODIFIED_BY_CLIENT = ("PropertyValueModifiedByClient", "The property %1 was assigned the value '%2' due to modification by a client.", "OK");
        TEST_MESSAGE = ("TestMessage", "Test message.", "OK");
        RESOURCE_POWERED_ON = ("ResourcePoweredOn", "The resource '%1' has powered on.", "OK");
        RESOURCE_POWERED_OFF = ("ResourcePoweredOff", "The resource '%1' has powered off.", "OK");
        RESOURCE_POWERING_OFF = ("ResourcePoweringOff", "The resource '%1' is powering off.", "OK");
    }
}

/// The TaskEvent registry: task life-cycle messages, in a Task's `Messages` and as events.
pub mod task_event {
    use super::MessageDef;
    registry! {
        TASK_STARTED = ("TaskStarted", "The task with Id '%1' has started.", "OK", "None.");
        TASK_COMPLETED_OK = ("TaskCompletedOK", "The task with Id '%1' has completed.", "OK", "None.");
        TASK_COMPLETED_WARNING = ("TaskCompletedWarning", "The task with Id '%1' has completed with warnings.", "Warning", "None.");
        TASK_ABORTED = ("TaskAborted", "The task with Id '%1' has completed with errors.", "Critical", "None.");
        TASK_CANCELLED = ("TaskCancelled", "Work on the task with Id '%1' was halted prior to completion due to an explicit request.", "Warning", "None.");
        TASK_REMOVED = ("TaskRemoved", "The task with Id '%1' was removed.", "Warning", "None.");
        TASK_PAUSED = ("TaskPaused", "The task with Id '%1' was paused.", "Warning", "None.");
        TASK_RESUMED = ("TaskResumed", "The task with Id '%1' was resumed.", "OK", "None.");
        TASK_PROGRESS_CHANGED = ("TaskProgressChanged", "The task with Id '%1' has changed to progress %2 percent complete.", "OK", "None.");
    }
}

/// The Update registry: what an update task reports (`Message::update`).
pub mod update {
    use super::MessageDef;
    registry! {
        TARGET_DETERMINED = ("TargetDetermined", "The target device '%1' will be updated with image '%2'.", "OK", "None.");
        ALL_TARGETS_DETERMINED = ("AllTargetsDetermined", "All the target devices to be updated were determined.", "OK", "None.");
        NO_TARGETS_DETERMINED = ("NoTargetsDetermined", "No target device will be updated with image '%1'.", "OK", "None.");
        UPDATE_IN_PROGRESS = ("UpdateInProgress", "An update is in progress.", "OK", "None.");
        TRANSFERRING_TO_COMPONENT = ("TransferringToComponent", "Image '%1' is being transferred to '%2'.", "OK", "None.");
        VERIFYING_AT_COMPONENT = ("VerifyingAtComponent", "Image '%1' is being verified at '%2'.", "OK", "None.");
        INSTALLING_ON_COMPONENT = ("InstallingOnComponent", "Image '%1' is being installed on '%2'.", "OK", "None.");
        APPLYING_ON_COMPONENT = ("ApplyingOnComponent", "Image '%1' is being applied on '%2'.", "OK", "None.");
        TRANSFER_FAILED = ("TransferFailed", "Transfer of image '%1' to '%2' failed.", "Critical", "None.");
        VERIFICATION_FAILED = ("VerificationFailed", "Verification of image '%1' at '%2' failed.", "Critical", "None.");
        APPLY_FAILED = ("ApplyFailed", "Installation of image '%1' to '%2' failed.", "Critical", "None.");
        ACTIVATE_FAILED = ("ActivateFailed", "Activation of image '%1' on '%2' failed.", "Critical", "None.");
        AWAIT_TO_UPDATE = ("AwaitToUpdate", "Awaiting for an action to proceed with installing image '%1' on '%2'.", "OK", "Perform the requested action to advance the update operation.");
        AWAIT_TO_ACTIVATE = ("AwaitToActivate", "Awaiting for an action to proceed with activating image '%1' on '%2'.", "OK", "Perform the requested action to advance the update operation.");
        UPDATE_SUCCESSFUL = ("UpdateSuccessful", "Device '%1' successfully updated with image '%2'.", "OK", "None.");
        OPERATION_TRANSITIONED_TO_JOB = ("OperationTransitionedToJob", "The update operation has transitioned to the job at URI '%1'.", "OK", "Follow the referenced job and monitor the job for further updates.");
        UPDATE_SKIPPED = ("UpdateSkipped", "Device '%1' skipped the update with image '%2'.", "OK", "None.");
        UPDATE_SKIPPED_SAME_VERSION = ("UpdateSkippedSameVersion", "Device '%1' skipped the update with image '%2' because the same version is already installed.", "OK", "None.");
        UPDATE_SKIPPED_VERSION_TOO_LOW = ("UpdateSkippedVersionTooLow", "Device '%1' skipped the update with image '%2' due to the minimum version requirement.", "OK", "None.");
        UPDATE_NOT_APPLICABLE = ("UpdateNotApplicable", "Image '%1' was not applicable to device '%2'.", "Warning", "None.");
    }
}

/// Fill `%1`, `%2`… in a registry template.
pub fn render(text: &str, args: &[String]) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 1 < b.len() && b[i + 1].is_ascii_digit() {
            let mut j = i + 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let n: usize = text[i + 1..j].parse().unwrap_or(0);
            if n >= 1 && n <= args.len() {
                out.push_str(&args[n - 1]);
            }
            i = j;
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// A Message object (Message.v1_x) as it appears in `@Message.ExtendedInfo`.
#[derive(Clone, Debug)]
pub struct Message {
    pub def: &'static MessageDef,
    pub prefix: &'static str,
    pub args: Vec<String>,
    pub related: Vec<String>,
    /// A Resolution specific to this occurrence (e.g. which rule a value broke), instead of the
    /// registry's generic one.
    pub resolution: Option<String>,
}

impl Message {
    /// A message of the registry whose `Name.Major.Minor` prefix is given.
    pub fn new(prefix: &'static str, def: &'static MessageDef, args: &[&str]) -> Self {
        Message { def, prefix, args: args.iter().map(|s| s.to_string()).collect(), related: vec![], resolution: None }
    }
    pub fn base(def: &'static MessageDef, args: &[&str]) -> Self {
        Self::new(BASE_PREFIX, def, args)
    }
    pub fn task_event(def: &'static MessageDef, args: &[&str]) -> Self {
        Self::new(TASK_EVENT_PREFIX, def, args)
    }
    /// An Update registry message, e.g. `Message::update(&update::TRANSFERRING_TO_COMPONENT, &[image, target])`.
    pub fn update(def: &'static MessageDef, args: &[&str]) -> Self {
        Self::new(UPDATE_PREFIX, def, args)
    }
    /// Add a RelatedProperties entry (a JSON pointer such as `#/UserName`).
    pub fn related(mut self, prop: &str) -> Self {
        let p = if prop.starts_with('#') { prop.to_string() } else { format!("#/{}", prop.replace('.', "/")) };
        self.related.push(p);
        self
    }
    /// Say how to resolve this occurrence (never with secrets in it).
    pub fn resolution(mut self, text: impl Into<String>) -> Self {
        self.resolution = Some(text.into());
        self
    }
    pub fn id(&self) -> String {
        format!("{}.{}", self.prefix, self.def.key)
    }
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "@odata.type": "#Message.v1_3_0.Message",
            "MessageId": self.id(),
            "Message": render(self.def.text, &self.args),
            "MessageArgs": self.args,
            "MessageSeverity": self.def.severity,
            "Resolution": self.resolution.as_deref().unwrap_or(self.def.resolution),
        });
        if !self.related.is_empty() {
            v["RelatedProperties"] = json!(self.related);
        }
        v
    }
}

/// A Redfish extended error: an HTTP status and at least one message.
#[derive(Debug, Clone)]
pub struct RfError {
    pub status: StatusCode,
    pub messages: Vec<Message>,
    /// Extra response headers (e.g. `Allow` for 405, `WWW-Authenticate` for 401).
    pub headers: Vec<(&'static str, String)>,
}

impl RfError {
    /// Give the (first) message a Resolution saying what exactly to do.
    pub fn with_resolution(mut self, text: &str) -> Self {
        if let Some(m) = self.messages.first_mut() {
            m.resolution = Some(text.to_string());
        }
        self
    }
    pub fn new(status: StatusCode, msg: Message) -> Self {
        RfError { status, messages: vec![msg], headers: vec![] }
    }
    pub fn many(status: StatusCode, messages: Vec<Message>) -> Self {
        RfError { status, messages, headers: vec![] }
    }
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
    pub fn bad_request(def: &'static MessageDef, args: &[&str]) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Message::base(def, args))
    }
    pub fn not_found(uri: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, Message::base(&base::RESOURCE_MISSING_AT_URI, &[uri]))
    }
    pub fn resource_not_found(kind: &str, name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, Message::base(&base::RESOURCE_NOT_FOUND, &[kind, name]))
    }
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, Message::base(&base::INSUFFICIENT_PRIVILEGE, &[]))
    }
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, Message::base(&base::NO_VALID_SESSION, &[]))
            .with_header("WWW-Authenticate", "Basic realm=\"Keel\", charset=\"UTF-8\"".into())
    }
    /// Too many password checks are waiting: come back shortly (HTTP 503 + Retry-After).
    pub fn busy(retry_after: u32) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, Message::base(&base::SERVICE_TEMPORARILY_UNAVAILABLE, &[&retry_after.to_string()]))
            .with_header("Retry-After", retry_after.to_string())
    }
    /// Credentials were presented but refused (wrong, disabled, locked: all alike).
    pub fn bad_credentials() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, Message::base(&base::ACCESS_UNAUTHORIZED, &[]))
            .with_header("WWW-Authenticate", "Basic realm=\"Keel\", charset=\"UTF-8\"".into())
    }
    pub fn internal(what: impl std::fmt::Display) -> Self {
        log::error!("internal error: {what}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, Message::base(&base::INTERNAL_ERROR, &[]))
    }
    pub fn method_not_allowed(allow: String) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, Message::base(&base::OPERATION_NOT_ALLOWED, &[])).with_header("Allow", allow)
    }
    pub fn malformed_json() -> Self {
        Self::bad_request(&base::MALFORMED_JSON, &[])
    }
    pub fn property_unknown(p: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Message::base(&base::PROPERTY_UNKNOWN, &[p]).related(p))
    }
    pub fn type_error(value: &Value, p: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Message::base(&base::PROPERTY_VALUE_TYPE_ERROR, &[&value_arg(value), p]).related(p))
    }
    pub fn not_in_list(value: &Value, p: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Message::base(&base::PROPERTY_VALUE_NOT_IN_LIST, &[&value_arg(value), p]).related(p))
    }
    pub fn out_of_range(value: &Value, p: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Message::base(&base::PROPERTY_VALUE_OUT_OF_RANGE, &[&value_arg(value), p]).related(p))
    }
    pub fn missing(p: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Message::base(&base::CREATE_FAILED_MISSING_REQ_PROPERTIES, &[p]).related(p))
    }
    pub fn query_unsupported(name: &str) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, Message::base(&base::QUERY_PARAMETER_UNSUPPORTED, &[name]))
    }
    pub fn query_format(value: &str, name: &str) -> Self {
        Self::bad_request(&base::QUERY_PARAMETER_VALUE_FORMAT_ERROR, &[value, name])
    }

    /// The `error` body of DSP0266 §9.5.11.
    pub fn body(&self) -> Value {
        let first = &self.messages[0];
        let (code, text) = if self.messages.len() == 1 {
            (first.id(), render(first.def.text, &first.args))
        } else {
            (format!("{BASE_PREFIX}.GeneralError"), "A general error has occurred. See ExtendedInfo for more information.".to_string())
        };
        json!({ "error": {
            "code": code,
            "message": text,
            "@Message.ExtendedInfo": self.messages.iter().map(Message::to_json).collect::<Vec<_>>(),
        }})
    }
}

/// A value as a MessageArg: strings bare, everything else as JSON text.
pub fn value_arg(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl std::fmt::Display for RfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.messages.first().map(|m| m.id()).unwrap_or_default())
    }
}

pub type RfResult<T> = Result<T, RfError>;

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn renders_arguments_in_order() {
        assert_eq!(render("The value '%1' for the property %2 is bad.", &["x".into(), "Y".into()]), "The value 'x' for the property Y is bad.");
        assert_eq!(render("no args", &[]), "no args");
    }
    #[test]
    fn error_body_has_code_and_extended_info() {
        let e = RfError::property_unknown("Foo");
        let b = e.body();
        assert_eq!(b["error"]["code"], "Base.1.22.PropertyUnknown");
        assert_eq!(b["error"]["@Message.ExtendedInfo"][0]["MessageArgs"][0], "Foo");
        assert_eq!(b["error"]["@Message.ExtendedInfo"][0]["RelatedProperties"][0], "#/Foo");
    }
}
