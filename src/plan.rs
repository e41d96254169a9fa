//! The launch plan: stages of stream groups, and for each process what it
//! waits for and which descriptors it gets. `jobgraph plan` prints it; the
//! runtime follows the same analysis.

use crate::graph::{DepKind, Endpoint, Graph};
use crate::spec::{format_duration, Command};

/// A whole plan, serialisable for `plan --format json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// Graph name.
    pub graph: String,
    /// Processes declared.
    pub processes: usize,
    /// Instances, replicas counted.
    pub instances: u64,
    /// `max_parallel`, if set.
    pub max_parallel: Option<u32>,
    /// `max_parallel` comes from `--max-parallel`, not the file.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub max_parallel_from_cli: bool,
    /// `shutdown_grace` as written.
    pub shutdown_grace: String,
    /// `fail_fast`.
    pub fail_fast: bool,
    /// `fail_fast` is off by `--keep-going`, not the file.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_going_from_cli: bool,
    /// Stages in launch order.
    pub stages: Vec<Stage>,
}

/// Everything that can launch once earlier stages allow it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stage {
    /// 1-based.
    pub number: usize,
    /// Launch units: one process, or a stream group launching as one.
    pub units: Vec<Unit>,
}

/// Processes that launch together.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unit {
    /// Edges joining the group (empty for a lone process).
    pub joined_by: Vec<String>,
    /// Members.
    pub processes: Vec<Step>,
}

/// One process of the plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// Name.
    pub name: String,
    /// Instance names (`w[0]`…) when replicated, else just the name. Held
    /// as a count and written out name by name only when serialised, so a
    /// plan's memory follows processes, not instances.
    pub instances: Instances,
    /// The command as it would be shown.
    pub command: String,
    /// Run through `/bin/sh -c`.
    pub shell: bool,
    /// Daemon.
    pub daemon: bool,
    /// What it waits for, in words.
    pub waits_for: Vec<String>,
    /// Locks it takes.
    pub locks: Vec<String>,
    /// Its stream endpoints.
    pub endpoints: Vec<Endpoint>,
}

impl Plan {
    /// Builds the plan of a validated graph.
    pub fn new(g: &Graph) -> Plan {
        Plan::of(g, &vec![true; g.file.processes.len()])
    }

    /// The plan of the processes marked in `included` (see [`Graph::only`]).
    pub fn of(g: &Graph, included: &[bool]) -> Plan {
        let f = &g.file;
        let stages = g
            .stages
            .iter()
            .enumerate()
            .map(|(k, groups)| Stage {
                number: k + 1,
                units: groups
                    .iter()
                    .filter(|&&gi| g.groups[gi].members.iter().any(|&m| included[m]))
                    .map(|&gi| unit(g, gi))
                    .collect(),
            })
            .filter(|stage: &Stage| !stage.units.is_empty())
            .enumerate()
            .map(|(k, mut stage)| {
                stage.number = k + 1;
                stage
            })
            .collect();
        let chosen = || {
            f.processes
                .iter()
                .zip(included)
                .filter(|(_, inc)| **inc)
                .map(|(p, _)| p)
        };
        Plan {
            graph: g.name.clone(),
            processes: chosen().count(),
            instances: chosen().map(|p| u64::from(p.replicas.value)).sum(),
            max_parallel: f.graph.max_parallel.as_ref().map(|m| m.value),
            max_parallel_from_cli: false,
            shutdown_grace: format_duration(f.graph.shutdown_grace),
            fail_fast: f.graph.fail_fast,
            keep_going_from_cli: false,
            stages,
        }
    }

    /// The plan as text for people.
    pub fn render(&self) -> String {
        let mut o = String::new();
        self.render_header(&mut o);
        for stage in &self.stages {
            o.push_str(&format!("\nstage {}\n", stage.number));
            for unit in &stage.units {
                render_unit(&mut o, unit);
            }
        }
        if self.max_parallel.is_some() {
            o.push_str("\nstages show dependencies; max_parallel and locks may spread a stage over time.\n");
        }
        o
    }

    fn render_header(&self, o: &mut String) {
        o.push_str(&format!(
            "graph {}: {} ({}) in {}\n",
            self.graph,
            plural(self.processes, "process", "processes"),
            match self.instances {
                1 => "1 instance".to_string(),
                n => format!("{n} instances"),
            },
            plural(self.stages.len(), "stage", "stages")
        ));
        o.push_str(&format!(
            "max_parallel {} · shutdown_grace {} · fail_fast {}\n",
            match self.max_parallel {
                None => "unlimited".to_string(),
                Some(m) if self.max_parallel_from_cli => format!("{m} (--max-parallel)"),
                Some(m) => m.to_string(),
            },
            self.shutdown_grace,
            match (self.fail_fast, self.keep_going_from_cli) {
                (true, _) => "on",
                (false, true) => "off (--keep-going)",
                (false, false) => "off",
            }
        ));
    }
}

/// Stream group `gi` as one launch unit.
fn unit(g: &Graph, gi: usize) -> Unit {
    let group = &g.groups[gi];
    Unit {
        joined_by: group.edges.clone(),
        processes: group.members.iter().map(|&i| step(g, i)).collect(),
    }
}

fn step(g: &Graph, i: usize) -> Step {
    let f = &g.file;
    let p = &f.processes[i];
    let (command, shell) = match &p.command {
        Command::Argv(a) => (shell_words(a.iter().map(|s| s.value.as_str())), false),
        Command::Shell(s) => (s.value.clone(), true),
        Command::Missing => (String::new(), false),
    };
    let n = p.replicas.value;
    Step {
        name: p.name.value.clone(),
        instances: Instances {
            name: p.name.value.clone(),
            replicas: n,
        },
        command,
        shell,
        daemon: p.daemon.value,
        waits_for: waits_for(g, i),
        locks: g.locks[i]
            .iter()
            .map(|&l| f.locks[l].name.value.clone())
            .collect(),
        endpoints: g.endpoints[i].clone(),
    }
}

/// What process `i` waits for, in words.
fn waits_for(g: &Graph, i: usize) -> Vec<String> {
    let f = &g.file;
    let name = |i: usize| f.processes[i].name.value.clone();
    let p = &f.processes[i];
    g.deps[i]
        .iter()
        .map(|d| match d.kind {
            DepKind::Parent => {
                format!("{} to have started (parent)", name(d.target))
            }
            DepKind::After(_) if p.always.value => {
                format!(
                    "{} to finish, whatever its outcome (always)",
                    name(d.target)
                )
            }
            DepKind::After(c) => {
                let what = match c {
                    crate::spec::Condition::Success => "to succeed",
                    crate::spec::Condition::Exit => "to exit",
                    crate::spec::Condition::Ready => "to be ready",
                    crate::spec::Condition::Start => "to start",
                };
                format!("{} {what}", name(d.target))
            }
        })
        .collect()
}

fn render_unit(o: &mut String, unit: &Unit) {
    if !unit.joined_by.is_empty() {
        let names: Vec<&str> = unit.processes.iter().map(|p| p.name.as_str()).collect();
        o.push_str(&format!(
            "  stream group {{{}}} via {} — launches together, fails together\n",
            names.join(", "),
            unit.joined_by.join(", ")
        ));
    }
    let indent = if unit.joined_by.is_empty() {
        "  "
    } else {
        "    "
    };
    for p in &unit.processes {
        render_step(o, indent, p);
    }
}

fn render_step(o: &mut String, indent: &str, p: &Step) {
    let mut title = p.name.clone();
    if p.instances.replicas > 1 {
        title.push_str(&format!("[0..{}]", p.instances.replicas - 1));
    }
    if p.daemon {
        title.push_str(" (daemon)");
    }
    let cmd = if p.shell {
        format!("sh -c {}", quote(&p.command))
    } else {
        p.command.clone()
    };
    let cmd = one_line(&cmd, 72);
    o.push_str(&format!("{indent}{title:<24} {cmd}\n"));
    if !p.waits_for.is_empty() {
        o.push_str(&format!(
            "{indent}  waits for: {}\n",
            p.waits_for.join(", ")
        ));
    }
    if !p.locks.is_empty() {
        o.push_str(&format!("{indent}  locks: {}\n", p.locks.join(", ")));
    }
    for e in &p.endpoints {
        let arrow = match e.direction {
            crate::graph::Direction::In => "<-",
            crate::graph::Direction::Out => "->",
            crate::graph::Direction::Both => "<->",
        };
        o.push_str(&format!(
            "{indent}  fd {} {arrow} {} {} ({} {}) as ${}\n",
            e.fd,
            e.kind.table(),
            e.edge,
            match e.direction {
                crate::graph::Direction::In => "from",
                crate::graph::Direction::Out => "to",
                crate::graph::Direction::Both => "with",
            },
            e.peers.join(", "),
            e.env
        ));
    }
}

/// The instances of one process: `name` alone, or `name[0]` … `name[N-1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instances {
    /// The process name.
    pub name: String,
    /// How many replicas.
    pub replicas: u32,
}

impl Instances {
    /// How many instances.
    pub fn len(&self) -> usize {
        self.replicas as usize
    }

    /// Never true: a process has at least one instance.
    pub fn is_empty(&self) -> bool {
        self.replicas == 0
    }

    /// The instance names, made one at a time.
    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        let replicated = self.replicas > 1;
        (0..self.replicas).map(move |r| {
            if replicated {
                format!("{}[{r}]", self.name)
            } else {
                self.name.clone()
            }
        })
    }
}

impl serde::Serialize for Instances {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for name in self.names() {
            seq.serialize_element(&name)?;
        }
        seq.end()
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The first line of a command, cut to `max` characters, marked `…` when cut.
fn one_line(cmd: &str, max: usize) -> String {
    let first = cmd.lines().next().unwrap_or_default();
    let mut out: String = first.chars().take(max).collect();
    if out.len() < cmd.len() {
        out.push('…');
    }
    out
}

/// Joins argv for display, quoting words a shell would split.
fn shell_words<'a>(words: impl Iterator<Item = &'a str>) -> String {
    words.map(quote).collect::<Vec<_>>().join(" ")
}

fn quote(w: &str) -> String {
    let plain = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%{}[]".contains(c));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn long_commands_are_cut_to_one_line() {
        assert_eq!(super::one_line("echo hi", 72), "echo hi");
        assert_eq!(super::one_line("a\nb", 72), "a…");
        assert_eq!(super::one_line("abcdef", 3), "abc…");
    }

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote("ls"), "ls");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }
}
