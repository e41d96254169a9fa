//! Resolving names: `after`, `parent` and `locks` to indices, with the checks
//! that need only one reference at a time.

use super::{unknown_process, Dep, DepKind};
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::spec::{After, Condition, JobFile, Process, Sp};
use rustc_hash::FxHashMap as HashMap;

pub(super) struct Refs {
    pub deps: Vec<Vec<Dep>>,
    pub locks: Vec<Vec<usize>>,
    pub children: Vec<Vec<usize>>,
}

pub(super) fn resolve(
    file: &JobFile,
    index: &HashMap<&str, usize>,
    diags: &mut Vec<Diagnostic>,
) -> Refs {
    let n = file.processes.len();
    let lock_index: HashMap<&str, usize> = file
        .locks
        .iter()
        .enumerate()
        .map(|(i, l)| (l.name.value.as_str(), i))
        .collect();
    let mut refs = Refs {
        deps: vec![Vec::new(); n],
        locks: vec![Vec::new(); n],
        children: vec![Vec::new(); n],
    };
    for (i, p) in file.processes.iter().enumerate() {
        for a in &p.after {
            let Some(&t) = index.get(a.process.value.as_str()) else {
                diags.push(unknown_process(
                    file,
                    &a.process,
                    a.process.span.clone(),
                    "`after`",
                ));
                continue;
            };
            let target = &file.processes[t];
            // A daemon child is stopped when its parent finishes, which does
            // not wait for `p` unless `p` is inside that parent's subtree.
            let stopped_with_parent = target
                .parent
                .as_ref()
                .is_some_and(|parent| !within(file, index, i, &parent.value));
            check_after(p, a, target, stopped_with_parent, diags);
            // Waiting for an ancestor to finish waits for its join, which
            // waits for this process: a loop through the join.
            let waits_for_end =
                p.always.value || matches!(a.condition, Condition::Success | Condition::Exit);
            if t != i
                && waits_for_end
                && !p.daemon.value
                && within(file, index, i, &target.name.value)
            {
                diags.push(
                    Diagnostic::at(
                        Code::Cycle,
                        a.process.span.clone(),
                        format!(
                            "`{}` waits for its ancestor `{}` to finish, but `{}` finishes only once `{}` has (a process is finished when its non-daemon children are)",
                            p.name.value, target.name.value, target.name.value, p.name.value
                        ),
                    )
                    .label("waits for its own ancestor")
                    .help(if p.always.value {
                        // An `always` step reads every condition as "finished".
                        format!(
                            "an `always` step waits for its `after` targets to finish, whatever the condition: take `{}` out from under `{}`, or drop `always`",
                            p.name.value, target.name.value
                        )
                    } else {
                        format!(
                            "wait for \"start\" or \"ready\" of `{}` instead, or take `{}` out from under it",
                            target.name.value, p.name.value
                        )
                    }),
                );
            }
            refs.deps[i].push(Dep {
                target: t,
                kind: DepKind::After(a.condition),
                span: a.process.span.clone(),
            });
        }
        if let Some(parent) = &p.parent {
            match index.get(parent.value.as_str()) {
                None => diags.push(unknown_process(
                    file,
                    parent,
                    parent.span.clone(),
                    "`parent`",
                )),
                Some(&t) => {
                    check_parent(p, parent, &file.processes[t], diags);
                    refs.children[t].push(i);
                    refs.deps[i].push(Dep {
                        target: t,
                        kind: DepKind::Parent,
                        span: parent.span.clone(),
                    });
                }
            }
        }
        for l in &p.locks {
            match lock_index.get(l.value.as_str()) {
                Some(&li) => refs.locks[i].push(li),
                None => diags.push(unknown_lock(file, l)),
            }
        }
    }
    refs
}

/// Whether process `i` is the process named `ancestor` or one of its
/// descendants (a parent cycle, reported elsewhere, ends the walk).
fn within(file: &JobFile, index: &HashMap<&str, usize>, i: usize, ancestor: &str) -> bool {
    let mut cur = i;
    for _ in 0..=file.processes.len() {
        let p = &file.processes[cur];
        if p.name.value == ancestor {
            return true;
        }
        match p.parent.as_ref().and_then(|n| index.get(n.value.as_str())) {
            Some(&next) => cur = next,
            None => return false,
        }
    }
    false
}

/// `p` waits for `target` in a way it cannot: readiness it never reports,
/// or the end of a daemon that ends only after `p` does.
fn check_after(
    p: &Process,
    a: &After,
    target: &Process,
    stopped_with_parent: bool,
    diags: &mut Vec<Diagnostic>,
) {
    if a.condition == Condition::Ready && target.ready.is_none() {
        diags.push(
            Diagnostic::at(
                Code::ReadyWithoutProbe,
                a.process.span.clone(),
                format!("`{}` waits for `{}` to be ready, but `{}` has no `ready` probe", p.name.value, target.name.value, target.name.value),
            )
            .label("waits for readiness")
            .related(target.name.span.clone(), "declared here without `ready`")
            .help(format!(
                "add a probe to {}, e.g. ready = {{ tcp = \"127.0.0.1:8080\" }}, or wait for \"start\" instead",
                target.name.value
            )),
        );
    }
    // An `always` step waits for every target to finish, whatever the condition.
    if target.daemon.value
        && !stopped_with_parent
        && !p.daemon.value
        && (p.always.value || matches!(a.condition, Condition::Success | Condition::Exit))
    {
        diags.push(
            Diagnostic::at(
                Code::AfterDaemon,
                a.process.span.clone(),
                format!(
                    "`{}` waits for daemon `{}` to {}, but {}",
                    p.name.value,
                    target.name.value,
                    if p.always.value {
                        "finish (it is `always`)"
                    } else if a.condition == Condition::Success {
                        "succeed"
                    } else {
                        "exit"
                    },
                    match &target.parent {
                        Some(parent) => format!(
                            "it is stopped only once its parent `{}` finished, which waits for `{}`",
                            parent.value, p.name.value
                        ),
                        None => "daemons are stopped only once every non-daemon process finished"
                            .to_string(),
                    }
                ),
            )
            .label("may wait forever")
            .related(target.daemon.span.clone(), "a daemon")
            .help(format!(
                "unless `{}` exits on its own, wait for \"start\" (or \"ready\") instead, or make it a non-daemon",
                target.name.value
            )),
        );
    }
}

/// A parent must be one process that outlives its children: not a daemon, not replicated.
fn check_parent(p: &Process, parent: &Sp<String>, pp: &Process, diags: &mut Vec<Diagnostic>) {
    if pp.daemon.value {
        diags.push(
            Diagnostic::at(
                Code::DaemonWithChildren,
                parent.span.clone(),
                format!("`{}` is a daemon, and daemons may not have children", pp.name.value),
            )
            .label("child of a daemon")
            .related(pp.daemon.span.clone(), "declared a daemon here")
            .help(format!(
                "make `{}` a top-level process or a child of a non-daemon, or drop daemon = true on `{}`",
                p.name.value, pp.name.value
            )),
        );
    }
    if pp.replicas.value > 1 {
        diags.push(
            Diagnostic::at(
                Code::ParentReplicated,
                parent.span.clone(),
                format!(
                    "`{}` has {} replicas, so it cannot be a parent",
                    pp.name.value, pp.replicas.value
                ),
            )
            .label("replicated parent")
            .related(pp.replicas.span.clone(), "replicated here")
            .help("a child belongs to one process; give it a non-replicated parent, or use after"),
        );
    }
}

fn unknown_lock(file: &JobFile, l: &Sp<String>) -> Diagnostic {
    let names = file.locks.iter().map(|l| l.name.value.as_str());
    let help = match crate::spec::did_you_mean(&l.value, names) {
        Some(s) => format!("did you mean `{s}`?"),
        None if crate::spec::is_valid_name(&l.value) => {
            format!("declare it with [lock.{}]", l.value)
        }
        None => format!(
            "`{}` is not a valid name (a letter or `_`, then letters, digits, `_` or `-`)",
            l.value
        ),
    };
    Diagnostic::at(
        Code::UnknownLock,
        l.span.clone(),
        format!("lock `{}` is not declared", l.value),
    )
    .label("unknown lock")
    .help(help)
}
