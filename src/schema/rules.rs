//! The rules of the schema that schemars cannot derive from the types:
//! names of tables, exactly-one-of keys, and what `validate` checks of a
//! string's shape (a program name, a URL, a var's environment name).

use super::{NAME_PATTERN, PORT_PATTERN};
use serde_json::{json, Value};

/// Adds them to the derived schema `v`.
pub(super) fn add(v: &mut Value) {
    // Rules schemars cannot derive: names of tables, and exactly-one-of keys.
    // A file with `include` may have its processes in the included files.
    if let Some(top) = v.as_object_mut() {
        if let Some(Value::Array(required)) = top.get_mut("required") {
            required.retain(|r| r != "process");
            if required.is_empty() {
                top.remove("required");
            }
        }
        top.insert(
            "anyOf".into(),
            json!([{ "required": ["process"] }, { "required": ["include"] }]),
        );
    }
    if let Some(props) = v.get_mut("properties").and_then(Value::as_object_mut) {
        for table in ["lock", "process", "queue", "pipe"] {
            if let Some(t) = props.get_mut(table).and_then(Value::as_object_mut) {
                t.insert("propertyNames".into(), json!({ "pattern": NAME_PATTERN }));
            }
        }
        // Var names: as process names, and not a built-in.
        if let Some(t) = props.get_mut("vars").and_then(Value::as_object_mut) {
            t.insert(
                "propertyNames".into(),
                json!({ "pattern": NAME_PATTERN, "not": { "enum": ["name", "replica", "item"] } }),
            );
        }
    }
    if let Some(defs) = v.get_mut("$defs").and_then(Value::as_object_mut) {
        if let Some(p) = defs.get_mut("ProcessTable").and_then(Value::as_object_mut) {
            p.insert(
                "oneOf".into(),
                json!([{ "required": ["cmd"] }, { "required": ["shell"] }]),
            );
            // bad-for-each and the daemon/always conflict, as validate has them.
            p.insert(
                "allOf".into(),
                json!([
                    { "not": { "required": ["for_each", "replicas"] } },
                    { "not": {
                        "required": ["daemon", "always"],
                        "properties": { "daemon": { "const": true }, "always": { "const": true } }
                    } }
                ]),
            );
        }
        if let Some(p) = defs.get_mut("PipeTable").and_then(Value::as_object_mut) {
            p.insert(
                "oneOf".into(),
                json!([
                    { "required": ["from", "to"], "not": { "required": ["between"] } },
                    { "required": ["between"], "not": { "anyOf": [
                        { "required": ["from"] }, { "required": ["to"] }
                    ] } }
                ]),
            );
        }
        // A program name cannot be empty (later arguments can).
        if let Some(cmd) = defs
            .get_mut("ProcessTable")
            .and_then(|p| p.pointer_mut("/properties/cmd"))
            .and_then(Value::as_object_mut)
        {
            cmd.insert(
                "prefixItems".into(),
                json!([{ "type": "string", "minLength": 1 }]),
            );
        }
        let http = format!(
            r"^http://(\[[0-9A-Fa-f:.]+\]|([A-Za-z0-9._-]|\{{replica\}}|\{{\{{[^}}]*\}}\}})+)(:{PORT_PATTERN})?([/?#]\S*)?$"
        );
        for probe in ["ReadyTable", "HealthTable"] {
            if let Some(p) = defs.get_mut(probe).and_then(Value::as_object_mut) {
                p.insert("dependentRequired".into(), json!({ "status": ["http"] }));
            }
            // The host and port `validate` takes; the probe's program is not empty.
            if let Some(p) = defs.get_mut(probe).and_then(|p| p.get_mut("properties")) {
                p["http"] = json!({ "type": "string", "pattern": http,
                    "description": "An http:// URL: a host name, IPv4 or [IPv6] address, an optional port 1-65535, a path." });
                if let Some(cmd) = p.get_mut("cmd").and_then(Value::as_object_mut) {
                    cmd.insert(
                        "prefixItems".into(),
                        json!([{ "type": "string", "minLength": 1 }]),
                    );
                }
            }
        }
        // What `validate` refuses of a string's shape.
        if let Some(env) = defs
            .get_mut("VarFromEnv")
            .and_then(|d| d.pointer_mut("/properties/env"))
            .and_then(Value::as_object_mut)
        {
            env.insert("pattern".into(), json!(r"^[^=\u0000]+$"));
        }
        if let Some(name) = defs
            .get_mut("GraphTable")
            .and_then(|d| d.pointer_mut("/properties/name"))
            .and_then(Value::as_object_mut)
        {
            name.insert("pattern".into(), json!(r"\S"));
        }
        // A string or a table: if/then/else rather than anyOf, so that a bad
        // string is reported against the list of allowed values.
        if let Some(o) = defs.get_mut("Output").and_then(Value::as_object_mut) {
            o.remove("anyOf");
            o.insert("if".into(), json!({ "type": "string" }));
            o.insert("then".into(), json!({ "$ref": "#/$defs/OutputMode" }));
            o.insert("else".into(), json!({ "$ref": "#/$defs/OutputFile" }));
        }
        if let Some(o) = defs.get_mut("After").and_then(Value::as_object_mut) {
            if let Some(Value::Array(mut both)) = o.remove("anyOf") {
                if both.len() == 2 {
                    let mut table = both.pop().unwrap_or_default();
                    // The table form names processes as the list form does.
                    table["propertyNames"] = json!({ "pattern": NAME_PATTERN });
                    let list = both.pop().unwrap_or_default();
                    o.insert("if".into(), json!({ "type": "array" }));
                    o.insert("then".into(), list);
                    o.insert("else".into(), table);
                }
            }
        }
        if let Some(p) = defs.get_mut("ReadyTable").and_then(Value::as_object_mut) {
            p.insert(
                "oneOf".into(),
                json!([
                    { "required": ["tcp"] }, { "required": ["cmd"] },
                    { "required": ["log"] }, { "required": ["file"] },
                    { "required": ["http"] }
                ]),
            );
        }
        if let Some(p) = defs.get_mut("HealthTable").and_then(Value::as_object_mut) {
            p.insert(
                "oneOf".into(),
                json!([
                    { "required": ["tcp"] }, { "required": ["cmd"] },
                    { "required": ["file"] }, { "required": ["http"] }
                ]),
            );
        }
    }
}
