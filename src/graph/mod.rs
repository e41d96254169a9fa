//! The validated graph: references resolved, every cross-value check of
//! SPEC §4 applied, and the analysis that `plan`, `graph` and the runtime
//! share — stream groups, descriptor numbers, launch stages.

mod cycles;
mod daemon_streams;
mod features;
mod output_files;
mod references;
mod stages;
mod streams;
mod warnings;

pub use streams::{Direction, EdgeKind, Endpoint, StreamGroup};

use crate::code::Code;
use crate::diagnostic::{Diagnostic, Span};
use crate::source::SourceFile;
use crate::spec::{Condition, JobFile};
use rustc_hash::FxHashMap as HashMap;

/// Why one process waits for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepKind {
    /// An `after` entry with its condition.
    After(Condition),
    /// The other process is this one's `parent`: it must be running.
    Parent,
}

impl DepKind {
    /// Short text for messages and plans.
    pub fn describe(self) -> &'static str {
        match self {
            DepKind::After(c) => c.as_str(),
            DepKind::Parent => "parent",
        }
    }
}

/// A resolved dependency: the waiting process waits for `target`.
#[derive(Debug, Clone)]
pub struct Dep {
    /// Index of the process waited for.
    pub target: usize,
    /// After (with condition) or parent.
    pub kind: DepKind,
    /// The reference in the file.
    pub span: Span,
}

/// A job file that passed every check, with its analysis.
#[derive(Debug, Clone)]
pub struct Graph {
    /// The decoded file.
    pub file: JobFile,
    /// `[graph] name`, or the file stem.
    pub name: String,
    /// Per process (file order): what it waits for.
    pub deps: Vec<Vec<Dep>>,
    /// Per process: indices of the locks it takes (into `file.locks`).
    pub locks: Vec<Vec<usize>>,
    /// Per process: its children (processes naming it as `parent`).
    pub children: Vec<Vec<usize>>,
    /// Stream groups; every process is in exactly one (alone if it has no stream edge).
    pub groups: Vec<StreamGroup>,
    /// Per process: index into `groups`.
    pub group_of: Vec<usize>,
    /// Per process: its stream endpoints in descriptor order.
    pub endpoints: Vec<Vec<Endpoint>>,
    /// Launch stages: group indices; a group depends only on groups of earlier stages.
    pub stages: Vec<Vec<usize>>,
    /// Process name to index.
    pub index: HashMap<String, usize>,
}

impl Graph {
    /// The index of a process by name.
    pub fn process_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The processes a run with `--only names` includes: the named ones and,
    /// transitively, what they wait for (after, parent) and their stream
    /// groups. All of them when `names` is empty.
    pub fn only(&self, names: &[String]) -> Result<Vec<bool>, String> {
        let n = self.file.processes.len();
        if names.is_empty() {
            return Ok(vec![true; n]);
        }
        let mut inc = vec![false; n];
        let mut stack = Vec::new();
        for name in names {
            stack.push(self.process_index(name).ok_or_else(|| {
                let names = self.file.processes.iter().map(|p| p.name.value.as_str());
                match crate::spec::did_you_mean(name, names) {
                    Some(s) => format!("--only `{name}`: no such process; did you mean `{s}`?"),
                    None => format!(
                        "--only `{name}`: no such process (the processes are: {})",
                        list_some(self.file.processes.iter().map(|p| p.name.value.as_str()))
                    ),
                }
            })?);
        }
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut inc[i], true) {
                continue;
            }
            stack.extend(self.deps[i].iter().map(|d| d.target));
            // A process is finished only once its non-daemon children are: they belong to it.
            stack.extend(
                self.children[i]
                    .iter()
                    .copied()
                    .filter(|&c| !self.file.processes[c].daemon.value),
            );
            // A stream group runs whole: its other ends are needed too.
            stack.extend(self.groups[self.group_of[i]].members.iter().copied());
        }
        Ok(inc)
    }

    /// Exactly these processes (`--members`, the nested run of a group
    /// unit): whole stream groups, with no closure over `after` or children;
    /// a dependency outside the set is taken as met (the outer run saw to it).
    pub fn exactly(&self, names: &[String]) -> Result<Vec<bool>, String> {
        let mut inc = vec![false; self.file.processes.len()];
        for name in names {
            let i = self
                .process_index(name)
                .ok_or_else(|| format!("--members `{name}`: no such process"))?;
            inc[i] = true;
        }
        for (i, &on) in inc.iter().enumerate() {
            if on
                && self.groups[self.group_of[i]]
                    .members
                    .iter()
                    .any(|&m| !inc[m])
            {
                let name = &self.file.processes[i].name.value;
                return Err(format!(
                    "--members: `{name}` is in a stream group whose other members are not listed"
                ));
            }
        }
        Ok(inc)
    }

    /// Checks a `--max-parallel` given on the command line as `[graph]
    /// max_parallel` is checked in the file: the same rule, without a span.
    pub fn check_max_parallel(&self, max: u32) -> Vec<Diagnostic> {
        let mut diags = Vec::new();
        streams::check_max_parallel(&self.file, &self.groups, max, None, &mut diags);
        diags
    }

    /// Total instances (replicas counted).
    pub fn instance_count(&self) -> u64 {
        self.file
            .processes
            .iter()
            .map(|p| u64::from(p.replicas.value))
            .sum()
    }
}

/// Resolves and checks a decoded file. Returns the graph only when no error was found.
pub fn analyze(mut file: JobFile, source: &SourceFile) -> (Option<Graph>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    features::resolve(&mut file, source, &mut diags);
    let index: HashMap<&str, usize> = file
        .processes
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.value.as_str(), i))
        .collect();
    let refs = references::resolve(&file, &index, &mut diags);
    let streams = streams::analyze(&file, &index, &mut diags);
    let cyclic = cycles::check_cycles(&file, &refs.deps, &mut diags);
    let mut stages = Vec::new();
    if !cyclic {
        match stages::launch_stages(&file, &refs.deps, &refs.children, &streams, &mut diags) {
            Some(s) => stages = s,
            None => {
                // A deadlock was reported; no stages to show.
            }
        }
    }
    streams::check_group_limits(&file, &refs.locks, &streams, &mut diags);
    daemon_streams::check(&file, &index, &mut diags);
    features::check_tty(&file, &streams.endpoints, &mut diags);
    warnings::check(&file, source, &refs.locks, &mut diags);
    check_instance_total(&file, &mut diags);
    output_files::check(&file, source, &mut diags);
    let name = file
        .graph
        .name
        .as_ref()
        .map(|n| n.value.clone())
        .unwrap_or_else(|| {
            source
                .path()
                .file_stem()
                // `<stdin>` (the file read from `-`) gives the name `stdin`.
                .map(|s| s.to_string_lossy().trim_matches(['<', '>']).to_string())
                .unwrap_or_else(|| "graph".into())
        });
    if diags.iter().any(|d| d.is_error()) {
        return (None, diags);
    }
    let index = index.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let graph = Graph {
        index,
        name,
        deps: refs.deps,
        locks: refs.locks,
        children: refs.children,
        groups: streams.groups,
        group_of: streams.group_of,
        endpoints: streams.endpoints,
        stages,
        file,
    };
    (Some(graph), diags)
}

/// A run numbers its instances with 32 bits: a graph with more (65,537
/// processes of 65,536 replicas) passed `validate` and then died of
/// out-of-memory in `run`. The process whose replicas pass the limit is named.
fn check_instance_total(file: &JobFile, diags: &mut Vec<Diagnostic>) {
    let mut total = 0u64;
    for p in &file.processes {
        total += u64::from(p.replicas.value);
        if total > u64::from(u32::MAX) {
            diags.push(
                Diagnostic::at(
                    Code::BadReplicas,
                    p.replicas.span.clone(),
                    format!(
                        "with `{}`, the graph has more than {} instances in all",
                        p.name.value,
                        u32::MAX
                    ),
                )
                .label("one too many")
                .help("split the work over several graphs, or use fewer replicas"),
            );
            return;
        }
    }
}

/// "did you mean" help over process names.
pub(crate) fn suggest_process(file: &JobFile, name: &str) -> Option<String> {
    let names = file.processes.iter().map(|p| p.name.value.as_str());
    crate::spec::did_you_mean(name, names).map(|s| format!("did you mean `{s}`?"))
}

pub(crate) fn unknown_process(file: &JobFile, name: &str, span: Span, what: &str) -> Diagnostic {
    let valid = file
        .processes
        .iter()
        .map(|p| p.name.value.as_str())
        .filter(|n| crate::spec::is_valid_name(n));
    let help = suggest_process(file, name).or_else(|| {
        Some(match crate::spec::is_valid_name(name) {
            true => format!(
                "declare it with [process.{name}], or use one of: {}",
                list_some(valid)
            ),
            // `[process.a b]` is no TOML, and `a b` could not be declared anyway.
            false => format!(
                "`{name}` is not a valid name (a letter or `_`, then letters, digits, `_` or `-`); use one of: {}",
                list_some(valid)
            ),
        })
    });
    Diagnostic::at(
        Code::UnknownProcess,
        span,
        format!("unknown process `{name}` in {what}"),
    )
    .label("unknown process")
    .maybe_help(help)
}

/// Up to eight names, then "…".
pub(crate) fn list_some<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut more = false;
    for n in names {
        if out.len() == 8 {
            more = true;
            break;
        }
        out.push(n);
    }
    let mut s = out.join(", ");
    if more {
        s.push_str(", …");
    }
    s
}
