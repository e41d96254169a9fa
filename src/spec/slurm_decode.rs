//! Decoding of the Slurm keys (`[graph] executor`, `[slurm]`, a process's `slurm`).

use super::*;
use crate::spec::slurm::{
    is_slurm_mem, owned_option, ExecutorKind, SlurmMode, SlurmResources, SlurmSettings,
};

/// Keys of `[slurm]`.
pub const KEYS_SLURM: &[&str] = &[
    "mode",
    "dir",
    "orphan_timeout",
    "keep",
    "cpus",
    "mem",
    "time",
    "partition",
    "account",
    "extra",
];
/// Keys of a process's `slurm` table.
pub const KEYS_PROCESS_SLURM: &[&str] = &["cpus", "mem", "time", "partition", "account", "extra"];

/// Most CPUs one task may ask for (Slurm's own bound is far above any node).
const MAX_CPUS: i64 = 65_536;

impl Decoder {
    pub(super) fn executor(&mut self, v: &Value<'_>) -> Option<Sp<ExecutorKind>> {
        let i = self.choice(&"graph.executor", v, &["local", "slurm"])?;
        let kind = [ExecutorKind::Local, ExecutorKind::Slurm][i];
        Some(Sp::new(kind, self.at(v.span())))
    }

    /// The `[slurm]` table.
    pub(super) fn slurm_settings(&mut self, t: &DeTable<'_>) -> SlurmSettings {
        let mut s = SlurmSettings::default();
        for (k, v) in t.iter() {
            match key_str(k) {
                "mode" => {
                    if let Some(i) = self.choice(&"slurm.mode", v, &["auto", "step", "batch"]) {
                        let mode = [SlurmMode::Auto, SlurmMode::Step, SlurmMode::Batch][i];
                        s.mode = Some(Sp::new(mode, self.at(v.span())));
                    }
                }
                "dir" => s.dir = self.string(&"slurm.dir", v),
                "orphan_timeout" => {
                    if let Some(d) = self.duration(&"slurm.orphan_timeout", v, false) {
                        if d < std::time::Duration::from_secs(2) {
                            self.push(
                                Diagnostic::at(
                                    Code::BadSlurmOption,
                                    self.at(v.span()),
                                    "`slurm.orphan_timeout` is under 2s, the heartbeat's period is 1s",
                                )
                                .label("too short")
                                .help("write orphan_timeout = \"10s\" (the default), or at least \"2s\""),
                            );
                        } else {
                            s.orphan_timeout = Some(Sp::new(d, self.at(v.span())));
                        }
                    }
                }
                "keep" => {
                    if let Some(b) = self.boolean(&"slurm.keep", v) {
                        s.keep = b;
                    }
                }
                key if KEYS_PROCESS_SLURM.contains(&key) => {
                    self.slurm_key("slurm", key, v, &mut s.defaults)
                }
                _ => self.unknown_key(k, KEYS_SLURM, "[slurm]"),
            }
        }
        s
    }

    /// A process's `slurm` table.
    pub(super) fn process_slurm(&mut self, process: &str, v: &Value<'_>) -> Option<SlurmResources> {
        let what = format!("process.{process}.slurm");
        let t = self.table(&what, v)?;
        let mut r = SlurmResources::default();
        for (k, v) in t.iter() {
            let key = key_str(k);
            if KEYS_PROCESS_SLURM.contains(&key) {
                self.slurm_key(&what, key, v, &mut r);
            } else {
                let context = format!("`{what}`");
                self.unknown_key(k, KEYS_PROCESS_SLURM, &context);
            }
        }
        Some(r)
    }

    fn slurm_key(&mut self, table: &str, key: &str, v: &Value<'_>, r: &mut SlurmResources) {
        let what = format!("{table}.{key}");
        match key {
            "cpus" => {
                if let Some(n) = self.int(&what, v, Code::BadNumber, 1, MAX_CPUS) {
                    r.cpus = Some(Sp::new(n as u32, self.at(v.span())));
                }
            }
            "mem" => r.mem = self.slurm_mem(&what, v),
            "time" => {
                if let Some(d) = self.duration(&what, v, false) {
                    r.time = Some(Sp::new(d, self.at(v.span())));
                }
            }
            "partition" => r.partition = self.slurm_word(&what, v),
            "account" => r.account = self.slurm_word(&what, v),
            "extra" => r.extra = self.slurm_extra(&what, v),
            _ => {}
        }
    }

    fn slurm_mem(&mut self, what: &str, v: &Value<'_>) -> Option<Sp<String>> {
        if let DeValue::Integer(i) = v.get_ref() {
            let help = Some(format!(
                "write a size with its unit, as Slurm does: {} = \"{i}M\" (K, M, G or T)",
                last_key(&what)
            ));
            self.wrong_type(&what, "a string", v, help);
            return None;
        }
        let s = self.string(&what, v)?;
        if is_slurm_mem(&s.value) {
            return Some(s);
        }
        let digits: String = s.value.chars().filter(char::is_ascii_digit).collect();
        let example = if digits.is_empty() {
            "8".into()
        } else {
            digits
        };
        self.push(
            Diagnostic::at(
                Code::BadSlurmOption,
                s.span,
                format!("`{what}` is \"{}\", not a size Slurm reads", s.value),
            )
            .label("not a size")
            .help(format!(
                "write a whole number and at most one unit letter, as `sbatch --mem` takes it: \"{example}G\" (K, M, G or T; no letter means megabytes)"
            )),
        );
        None
    }

    /// A partition or account name: one word.
    fn slurm_word(&mut self, what: &str, v: &Value<'_>) -> Option<Sp<String>> {
        let s = self.string(&what, v)?;
        if !s.value.is_empty() && !s.value.contains(char::is_whitespace) {
            return Some(s);
        }
        self.push(
            Diagnostic::at(
                Code::BadSlurmOption,
                s.span,
                format!("`{what}` must be one name, without spaces"),
            )
            .label("not a name")
            .help(format!(
                "write {} = \"name\" (`sinfo -s` lists partitions; `sacctmgr show assoc user=$USER` lists accounts), or remove the key",
                last_key(&what)
            )),
        );
        None
    }

    fn slurm_extra(&mut self, what: &str, v: &Value<'_>) -> Vec<Sp<String>> {
        let help = || Some(format!("write {} = [\"--gres=gpu:1\"]", last_key(&what)));
        let Some(list) = self.strings(&what, v, &help) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(list.len());
        for (i, arg) in list.into_iter().enumerate() {
            if !arg.value.starts_with('-') || arg.value.len() < 2 {
                self.push(
                    Diagnostic::at(
                        Code::BadSlurmOption,
                        arg.span.clone(),
                        format!("`{what}[{i}]` is \"{}\", which is not an option", arg.value),
                    )
                    .label("not an option")
                    .help("write each option whole, with its value after `=`: \"--gres=gpu:1\", not \"--gres\", \"gpu:1\""),
                );
            } else if let Some(owned) = owned_option(&arg.value) {
                self.push(
                    Diagnostic::at(
                        Code::BadSlurmOption,
                        arg.span.clone(),
                        format!("`{what}[{i}]` sets `{owned}`, which jobgraph sets itself on every unit"),
                    )
                    .label("set by jobgraph")
                    .help(format!(
                        "remove it: jobgraph names, places and follows each unit itself (see docs/slurm.md); for resources use the `slurm` keys ({})",
                        KEYS_PROCESS_SLURM.join(", ")
                    )),
                );
            } else {
                out.push(arg);
            }
        }
        out
    }
}
