//! JSON as every jailprov output prints it: pretty, keys sorted, one newline after; and the JSON
//! Schemas committed under schemas/, printed the same way.

use serde::Serialize;

/// `report` as pretty JSON, its keys sorted (through a Value, whose maps are ordered), one
/// newline after. A value that cannot be serialized prints as `{"error": …}`.
pub fn to_json<T: Serialize>(report: &T) -> String {
    let value = serde_json::to_value(report).unwrap_or_else(|error| serde_json::json!({ "error": error.to_string() }));
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"));
    text.push('\n');
    text
}

/// The JSON Schema of `T`, pretty, one newline after, as committed under schemas/.
pub fn schema_of<T: schemars::JsonSchema>() -> String {
    let schema = schemars::schema_for!(T);
    let mut text = serde_json::to_string_pretty(&schema).expect("a derived JSON schema serializes");
    text.push('\n');
    text
}
