//! Mutated job files — truncations, byte flips, spliced lines, random TOML —
//! never panic, and the binary always answers 0 or 1 with a message.

mod common;
use common::*;
use jobgraph::{check_source, SourceFile};
use proptest::prelude::*;

/// Small deterministic generator, so a failure names a reproducible seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    "=",
    "\"",
    "'",
    ",",
    "\n",
    "#",
    "after",
    "parent",
    "daemon",
    "true",
    "-1",
    "0",
    "99999999999999999999",
    "\"ready\"",
    "[process.x]",
    "[queue.q]",
    "[pipe.p]",
    "between",
    "from",
    "to",
    "replicas",
    "\"1h30m\"",
    "\"\"",
    "é",
    "\\u0000",
    "[[process]]",
    "inf",
    "nan",
    "1979-05-27",
    "[vars]",
    "{{ x }}",
    "{{",
    "}}",
    "{{{{",
    "\"{{ replica }}\"",
    "{{ name }}",
    "{{ item }}",
    "{ env = \"HOME\" }",
    "env_file",
    "\"missing.env\"",
    "{ path = \"x\", optional = true }",
    "include = [\"common.toml\"]",
    "include = [\"include.toml\"]",
    "include",
];

fn mutate(text: &str, rng: &mut Rng) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    match rng.below(5) {
        0 => bytes.truncate(rng.below(bytes.len() + 1)),
        1 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(bytes.len());
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
        2 => {
            let at = rng.below(bytes.len() + 1);
            let tok = TOKENS[rng.below(TOKENS.len())];
            bytes.splice(at..at, tok.bytes());
        }
        3 => {
            let lines: Vec<&str> = text.lines().collect();
            let mut out: Vec<&str> = lines.clone();
            for _ in 0..1 + rng.below(3) {
                let from = lines[rng.below(lines.len())];
                let at = rng.below(out.len() + 1);
                out.insert(at, from);
            }
            if !out.is_empty() && rng.below(2) == 0 {
                let i = rng.below(out.len());
                out.remove(i);
            }
            bytes = out.join("\n").into_bytes();
        }
        _ => {
            let at = rng.below(bytes.len() + 1);
            let end = (at + rng.below(40)).min(bytes.len());
            bytes.drain(at..end);
        }
    }
    bytes
}

#[test]
fn thousands_of_mutations_never_panic_in_the_library() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut count = 0;
    for path in toml_files("jobs")
        .into_iter()
        .chain(toml_files("tests/invalid"))
    {
        let text = std::fs::read_to_string(&path).unwrap();
        for _ in 0..150 {
            let bytes = mutate(&text, &mut rng);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let checked = check_source(SourceFile::new("mutant.toml", text));
            // Either valid, or at least one error that says something.
            if checked.graph.is_none() {
                assert!(checked
                    .diagnostics
                    .iter()
                    .any(|d| d.is_error() && !d.message.is_empty()));
            }
            count += 1;
        }
    }
    assert!(count >= 5000, "only {count} mutants");
}

#[test]
fn mutants_through_the_binary_exit_0_or_1_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let files = toml_files("jobs");
    for k in 0..300 {
        let text = std::fs::read_to_string(&files[k % files.len()]).unwrap();
        let path = dir.path().join(format!("m{k}.toml"));
        std::fs::write(&path, mutate(&text, &mut rng)).unwrap();
        for fmt in ["human", "json"] {
            let out = jobgraph()
                .args(["validate", "--format", fmt])
                .arg(&path)
                .output()
                .unwrap();
            let code = out.status.code();
            let said = if fmt == "human" {
                out.stderr
            } else {
                out.stdout
            };
            let said = String::from_utf8_lossy(&said);
            assert!(
                matches!(code, Some(0) | Some(1)),
                "exit {code:?} for {}:\n{said}",
                path.display()
            );
            assert!(!said.trim().is_empty(), "silent on {}", path.display());
            assert!(!said.contains("panicked"), "{said}");
        }
        let _ = std::fs::remove_file(&path);
    }
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(jobgraph::spec::KEYS_PROCESS).prop_map(str::to_string),
        proptest::sample::select(jobgraph::spec::KEYS_QUEUE).prop_map(str::to_string),
        proptest::sample::select(jobgraph::spec::KEYS_READY).prop_map(str::to_string),
        "[a-z_]{1,8}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "\"[a-z0-9 ]{0,8}\"",
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("\"10s\"".to_string()),
        Just("\"p0\"".to_string()),
        Just("1.5".to_string()),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec((key(), inner), 0..4).prop_map(|kv| {
                let mut seen = std::collections::HashSet::new();
                let items: Vec<String> = kv
                    .into_iter()
                    .filter(|(k, _)| seen.insert(k.clone()))
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect();
                format!("{{ {} }}", items.join(", "))
            }),
        ]
    })
}

fn document() -> impl Strategy<Value = String> {
    let table = (
        proptest::sample::select(&["process", "queue", "pipe", "lock", "graph", "env"][..]),
        0usize..3,
        proptest::collection::vec((key(), value()), 0..6),
    );
    proptest::collection::vec(table, 0..6).prop_map(|tables| {
        let mut s = String::new();
        let mut headers = std::collections::HashSet::new();
        for (kind, n, kvs) in tables {
            let header = if matches!(kind, "graph" | "env") {
                format!("[{kind}]")
            } else {
                format!("[{kind}.p{n}]")
            };
            if !headers.insert(header.clone()) {
                continue;
            }
            s.push_str(&header);
            s.push('\n');
            let mut seen = std::collections::HashSet::new();
            for (k, v) in kvs {
                if seen.insert(k.clone()) {
                    s.push_str(&format!("{k} = {v}\n"));
                }
            }
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_toml_documents_never_panic(doc in document()) {
        let checked = check_source(SourceFile::new("random.toml", doc));
        if checked.graph.is_none() {
            prop_assert!(checked.diagnostics.iter().any(|d| d.is_error()));
        }
    }
}

/// Inputs that crashed the fuzzer (`fuzz/`, `cargo +nightly fuzz run check`)
/// stay in tests/fuzz-crashes/ and must pass through every format cleanly.
#[test]
fn fuzzer_crashes_stay_fixed() {
    let dir = root().join("tests/fuzz-crashes");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        seen += 1;
        for format in ["human", "json", "github"] {
            let out = jobgraph()
                .args(["validate", "--format", format])
                .arg(&path)
                .timeout(std::time::Duration::from_secs(20))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                matches!(out.status.code(), Some(0 | 1)),
                "{}: {format}: {stderr}",
                path.display()
            );
            assert!(!stderr.contains("panicked"), "{}: {stderr}", path.display());
        }
        jobgraph()
            .args(["plan"])
            .arg(&path)
            .timeout(std::time::Duration::from_secs(20))
            .assert()
            .code(predicates::ord::lt(2));
    }
    assert!(seen > 0);
}

#[test]
fn braces_in_every_placement_never_panic() {
    const PARTS: &[&str] = &[
        "{{", "}}", "{{{{", " ", "a", "é", "{", "}", "replica", "item-x",
    ];
    let n = PARTS.len();
    for i in 0..n.pow(4) {
        let mut s = String::new();
        let mut k = i;
        for _ in 0..4 {
            s.push_str(PARTS[k % n]);
            k /= n;
        }
        let text = format!(
            "[vars]\na = \"1\"\n[env]\nE = '{s}'\n[process.p]\ncmd = ['{s}', 'x{s}']\nshell = '{s}'\nready = {{ log = '{s}' }}\n"
        );
        let checked = check_source(SourceFile::new("braces.toml", text));
        assert!(!checked.diagnostics.is_empty() || checked.graph.is_some());
    }
}

#[test]
fn mutated_included_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let main = std::fs::read_to_string(root().join("jobs/include.toml")).unwrap();
    let common = std::fs::read_to_string(root().join("jobs/common.toml")).unwrap();
    std::fs::write(dir.path().join("include.toml"), &main).unwrap();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for round in 0..300 {
        let (target, text) = if round % 2 == 0 {
            ("common.toml", &common)
        } else {
            ("include.toml", &main)
        };
        std::fs::write(dir.path().join("common.toml"), &common).unwrap();
        std::fs::write(dir.path().join("include.toml"), &main).unwrap();
        let bytes = mutate(text, &mut rng);
        std::fs::write(dir.path().join(target), &bytes).unwrap();
        // Rendering walks every span: human, JSON and GitHub forms.
        let out = jobgraph()
            .args(["validate", "--format", "json"])
            .arg(dir.path().join("include.toml"))
            .output()
            .unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if round % 10 == 0 {
            let out = jobgraph()
                .arg("validate")
                .arg(dir.path().join("include.toml"))
                .output()
                .unwrap();
            assert!(matches!(out.status.code(), Some(0 | 1)), "round {round}");
        }
    }
}
