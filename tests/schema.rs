//! The JSON Schema for editors (docs/jobgraph.schema.json): every example in
//! jobs/ is valid under it, and typical mistakes are rejected with messages
//! that name the allowed values. The validator is the `jsonschema` crate, so
//! this runs offline, in CI as anywhere.

mod common;
use common::*;
use serde_json::Value;

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join("docs/jobgraph.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

/// A TOML document as the JSON an editor's validator sees.
fn as_json(toml_text: &str) -> Value {
    let table: toml::Table = toml::from_str(toml_text).expect("valid TOML");
    serde_json::to_value(table).unwrap()
}

fn errors(v: &jsonschema::Validator, toml_text: &str) -> Vec<String> {
    v.iter_errors(&as_json(toml_text))
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

/// Every `type` in the schema, wherever it is.
fn types(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(o) => {
            if let Some(t) = o.get("type") {
                out.push(t.clone());
            }
            o.values().for_each(|x| types(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| types(x, out)),
        _ => {}
    }
}

#[test]
fn the_schema_has_no_null_types() {
    let text = std::fs::read_to_string(root().join("docs/jobgraph.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let mut all = Vec::new();
    types(&schema, &mut all);
    assert!(all.len() > 20);
    for t in all {
        let nullable = t == "null" || t.as_array().is_some_and(|a| a.iter().any(|x| x == "null"));
        assert!(!nullable, "TOML has no null, but the schema has type {t}");
    }
    assert!(!text.contains("\"default\": null"));
    // Processes, or an include that may bring them.
    assert_eq!(
        schema["anyOf"],
        serde_json::json!([{ "required": ["process"] }, { "required": ["include"] }])
    );
}

#[test]
fn every_example_is_valid() {
    let v = validator();
    for path in toml_files("jobs") {
        let text = std::fs::read_to_string(&path).unwrap();
        let errs = errors(&v, &text);
        assert!(errs.is_empty(), "{}: {errs:#?}", rel(&path));
    }
}

#[test]
fn mistakes_are_rejected_naming_the_allowed_values() {
    let v = validator();
    let base = "[process.a]\ncmd = [\"true\"]\n";
    // (what is added to a valid process, words the message must contain)
    let cases: &[(&str, &[&str])] = &[
        ("start = \"forkk\"", &["\"fork\"", "\"spawn\""]),
        ("stdout = \"yes\"", &["\"log\"", "\"null\"", "\"inherit\""]),
        ("stderr = \"out.txt\"", &["\"log\""]),
        ("restart = \"sometimes\"", &["\"on-failure\"", "\"always\""]),
        ("stdin = \"tty\"", &["\"inherit\""]),
        ("stop_signal = \"SIGFOO\"", &["\"SIGTERM\""]),
        ("after = { a = \"done\" }", &["\"success\"", "\"exit\""]),
        ("retry_delay = \"5\"", &["does not match"]),
        ("timeout = \"10 parsecs\"", &["does not match"]),
        ("daemon = \"yes\"", &["boolean"]),
        ("replicas = 0", &["minimum"]),
        ("after = [\"9lives\"]", &["does not match"]),
        ("ready = { tcp = \"localhost\" }", &["does not match"]),
        ("ready = { tcp = \"127.0.0.1:0\" }", &["does not match"]),
        (
            "health = { tcp = \"127.0.0.1:65536\" }",
            &["does not match"],
        ),
        ("for_each = [\"x\"]\nreplicas = 2", &["not"]),
        ("daemon = true\nalways = true", &["not"]),
        (
            "ready = { http = \"http://h/\", status = [600] }",
            &["anyOf"],
        ),
        ("ready = { tcp = \"h:80\", status = 200 }", &["http"]),
        ("after = [\"b\", \"b\"]", &["unique"]),
        ("stdout = { file = \"\" }", &["shorter"]),
        ("timeout = \"0s\"", &["not"]),
        ("health = { file = \"x\", interval = \"0ms\" }", &["not"]),
        ("env = { \"A=B\" = \"1\" }", &["does not match"]),
        ("timout = \"5s\"", &["timout"]),
        ("ready = { cmd = [\"\"] }", &["shorter"]),
        ("health = { cmd = [\"\", \"x\"] }", &["shorter"]),
        ("ready = { http = \"http://:80/\" }", &["does not match"]),
        ("ready = { http = \"http://x:0/\" }", &["does not match"]),
        (
            "ready = { http = \"http://x:65536/\" }",
            &["does not match"],
        ),
        ("ready = { http = \"http://u:p@x/\" }", &["does not match"]),
        ("health = { http = \"http://x y/\" }", &["does not match"]),
        ("ready = { tcp = \"a]:80\" }", &["does not match"]),
        ("ready = { tcp = \"a b:80\" }", &["does not match"]),
        ("after = { \"a b\" = \"success\" }", &["does not match"]),
    ];
    for (extra, words) in cases {
        let errs = errors(&v, &format!("{base}{extra}\n"));
        assert!(!errs.is_empty(), "{extra}: accepted");
        let all = errs.join("\n");
        for w in *words {
            assert!(all.contains(w), "{extra}: `{w}` not in:\n{all}");
        }
    }
    // File-level rules.
    let file_cases: &[(&str, &str)] = &[
        ("[graph]\nname = \"x\"\n", "anyOf"),
        ("[graph]\nname = \" \"\n[process.a]\ncmd = [\"x\"]\n", "does not match"),
        ("[vars]\nv = { env = \"A=B\" }\n[process.a]\ncmd = [\"x\"]\n", "anyOf"),
        ("[process.a]\nshell = \"x\"\ncmd = [\"y\"]\n", "oneOf"),
        ("[process.a]\ncwd = \".\"\n", "oneOf"),
        ("[process.a]\nshell = \"  \"\n", "does not match"),
        ("[process.a]\ncmd = [\"\"]\n", "shorter"),
        ("[vars]\nitem = \"x\"\n[process.a]\ncmd = [\"x\"]\n", "not"),
        ("[graph]\nname = \"\"\n[process.a]\ncmd = [\"x\"]\n", "shorter"),
        (
            "[process.a]\ncmd = [\"x\"]\n[process.b]\ncmd = [\"x\"]\n[pipe.p]\nbetween = [\"a\", \"b\"]\nfrom = \"a\"\n",
            "oneOf",
        ),
        (
            "[process.a]\ncmd = [\"x\"]\n[queue.q]\nfrom = [\"a\"]\nto = [\"a\"]\nmode = \"fanout\"\n",
            "\"broadcast\"",
        ),
        ("[process.a]\ncmd = [\"x\"]\n[graph]\nshutdown_grace = \"5\"\n", "does not match"),
    ];
    // Accepted as validate accepts them.
    for text in [
        "include = [\"parts.toml\"]\n",
        "[process.a]\ncmd = [\"x\"]\nready = { http = \"http://[::1]:8080/health?x=1\" }\n",
        "[process.a]\ncmd = [\"x\"]\nreplicas = 2\nready = { http = \"http://h:80{replica}/\" }\n",
        "[process.a]\ncmd = [\"x\"]\nready = { tcp = \"{{ host }}:{{ port }}\" }\n",
        "[process.a]\ncmd = [\"x\"]\nhealth = { http = \"http://127.0.0.1\" }\n",
    ] {
        let errs = errors(&v, text);
        assert!(errs.is_empty(), "{text}: {errs:#?}");
    }
    for (text, word) in file_cases {
        let errs = errors(&v, text);
        let all = errs.join("\n");
        assert!(!errs.is_empty(), "accepted:\n{text}");
        assert!(all.contains(word), "`{word}` not in:\n{all}\nfor\n{text}");
    }
}
