//! Stream edges: their checks, the stream groups they form, and the
//! descriptor each endpoint gets (SPEC §2 "Descriptors").

use super::{list_some, unknown_process};
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::spec::{JobFile, PipeEnds, Sp};
use rustc_hash::FxHashMap as HashMap;

/// The kind of a stream edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EdgeKind {
    /// A one-way kernel pipe.
    Pipe,
    /// A duplex socketpair.
    Duplex,
    /// A queue through the engine's broker.
    Queue,
}

impl EdgeKind {
    /// The table the edge is declared in.
    pub fn table(self) -> &'static str {
        match self {
            EdgeKind::Pipe | EdgeKind::Duplex => "pipe",
            EdgeKind::Queue => "queue",
        }
    }
}

/// Which way data flows through an endpoint, seen from its process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The process reads.
    In,
    /// The process writes.
    Out,
    /// The process reads and writes (duplex).
    Both,
}

/// One end of a stream edge, as its process sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    /// The edge's name.
    pub edge: String,
    /// Pipe, duplex pipe or queue.
    pub kind: EdgeKind,
    /// Reading, writing or both.
    pub direction: Direction,
    /// The descriptor number in the process.
    pub fd: i32,
    /// `JOBGRAPH_FD_<EDGE>`.
    pub env: String,
    /// The processes at the other end.
    pub peers: Vec<String>,
}

/// Processes joined by pipes and queues: they launch together and fail together.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamGroup {
    /// Member processes, in file order.
    pub members: Vec<usize>,
    /// Names of the edges joining them, in file order.
    pub edges: Vec<String>,
}

pub(super) struct Streams {
    pub groups: Vec<StreamGroup>,
    pub group_of: Vec<usize>,
    pub endpoints: Vec<Vec<Endpoint>>,
}

/// `JOBGRAPH_FD_` and the edge name, upper-cased, `-` as `_`.
pub fn fd_env_name(edge: &str) -> String {
    let mut s = String::with_capacity(12 + edge.len());
    s.push_str("JOBGRAPH_FD_");
    s.extend(edge.chars().map(|c| {
        if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        }
    }));
    s
}

struct RawEnd {
    process: usize,
    order: usize,
    edge: String,
    kind: EdgeKind,
    direction: Direction,
    peers: Vec<String>,
}

pub(super) fn analyze(
    file: &JobFile,
    index: &HashMap<&str, usize>,
    diags: &mut Vec<Diagnostic>,
) -> Streams {
    let n = file.processes.len();
    let mut edges = EdgeCollector {
        file,
        index,
        uf: UnionFind::new(n),
        ends: Vec::new(),
        edge_names: HashMap::default(),
    };
    for q in &file.queues {
        edges.queue(q, diags);
    }
    for pipe in &file.pipes {
        edges.pipe(pipe, diags);
    }

    pipe_cycles(file, index, diags);

    let EdgeCollector { mut uf, ends, .. } = edges;
    let (mut groups, group_of) = number_groups(&mut uf, n);
    let endpoints = assign_descriptors(ends, &group_of, &mut groups);
    Streams {
        groups,
        group_of,
        endpoints,
    }
}

/// Walks the queues and pipes once, gathering each edge's endpoints and the
/// unions that become stream groups, and reporting what is wrong with them.
struct EdgeCollector<'a> {
    file: &'a JobFile,
    index: &'a HashMap<&'a str, usize>,
    uf: UnionFind,
    ends: Vec<RawEnd>,
    /// Each edge's endpoint variable name: the edge, and its table (`pipe`, `queue`).
    edge_names: HashMap<String, (Sp<String>, String)>,
}

impl EdgeCollector<'_> {
    fn resolve(&self, name: &Sp<String>, what: &str, diags: &mut Vec<Diagnostic>) -> Option<usize> {
        match self.index.get(name.value.as_str()) {
            Some(&i) => Some(i),
            None => {
                diags.push(unknown_process(self.file, name, name.span.clone(), what));
                None
            }
        }
    }

    /// Two edges whose endpoint variables would collide: the first one keeps the name.
    fn clash(&mut self, name: &Sp<String>, table: &str, diags: &mut Vec<Diagnostic>) {
        let env = fd_env_name(&name.value);
        if let Some((prev, prev_table)) = self.edge_names.get(&env) {
            // Queues are walked before pipes: "first" is the file's order.
            let (first, second, table) = match prev.span.start <= name.span.start {
                true => (prev, name, table),
                false => (name, prev, prev_table.as_str()),
            };
            diags.push(
                Diagnostic::at(
                    Code::EdgeNameClash,
                    second.span.clone(),
                    format!("{table} `{}` and `{}` would both be {env}", second.value, first.value),
                )
                .label("same variable name")
                .related(first.span.clone(), "first declared here")
                .help("rename one of them: endpoint variables upper-case the name and turn `-` into `_`"),
            );
        } else {
            self.edge_names
                .insert(env, (name.clone(), table.to_string()));
        }
    }

    fn queue(&mut self, q: &crate::spec::Queue, diags: &mut Vec<Diagnostic>) {
        self.clash(&q.name, "queue", diags);
        let qn = &q.name.value;
        check_queue_sides(q, diags);
        let producers: Vec<usize> = q
            .from
            .value
            .iter()
            .filter_map(|p| self.resolve(p, "the queue's `from`", diags))
            .collect();
        let consumers: Vec<usize> =
            q.to.value
                .iter()
                .filter_map(|p| self.resolve(p, "the queue's `to`", diags))
                .collect();
        check_queue_self_feed(q, diags);
        let file = self.file;
        let names = |ids: &[usize]| {
            ids.iter()
                .map(|&i| file.processes[i].name.value.clone())
                .collect::<Vec<_>>()
        };
        let all: Vec<usize> = producers.iter().chain(&consumers).copied().collect();
        for w in all.windows(2) {
            self.uf.union(w[0], w[1]);
        }
        for &p in &producers {
            self.ends.push(RawEnd {
                process: p,
                order: q.name.span.start,
                edge: qn.clone(),
                kind: EdgeKind::Queue,
                direction: Direction::Out,
                peers: names(&consumers),
            });
        }
        for &c in &consumers {
            if producers.contains(&c) {
                continue;
            }
            self.ends.push(RawEnd {
                process: c,
                order: q.name.span.start,
                edge: qn.clone(),
                kind: EdgeKind::Queue,
                direction: Direction::In,
                peers: names(&producers),
            });
        }
    }

    fn pipe(&mut self, pipe: &crate::spec::Pipe, diags: &mut Vec<Diagnostic>) {
        self.clash(&pipe.name, "pipe", diags);
        let pn = &pipe.name.value;
        let (a, b, kind) = match &pipe.ends {
            PipeEnds::OneWay { from, to } => (from, to, EdgeKind::Pipe),
            PipeEnds::Duplex { between } => (&between[0], &between[1], EdgeKind::Duplex),
            PipeEnds::Invalid => return,
        };
        if a.value == b.value {
            diags.push(
                Diagnostic::at(
                    Code::PipeToItself,
                    b.span.clone(),
                    format!("pipe `{pn}` joins `{}` to itself", a.value),
                )
                .label("same process at both ends")
                .help("a pipe joins two different processes"),
            );
            return;
        }
        let (Some(ia), Some(ib)) = (
            self.resolve(a, "the pipe's ends", diags),
            self.resolve(b, "the pipe's ends", diags),
        ) else {
            return;
        };
        if check_pipe_replicas(self.file, kind, [(a, ia), (b, ib)], diags) {
            return;
        }
        self.uf.union(ia, ib);
        let (da, db) = match kind {
            EdgeKind::Duplex => (Direction::Both, Direction::Both),
            _ => (Direction::Out, Direction::In),
        };
        for (me, dir, peer) in [(ia, da, b), (ib, db, a)] {
            self.ends.push(RawEnd {
                process: me,
                order: pipe.name.span.start,
                edge: pn.clone(),
                kind,
                direction: dir,
                peers: vec![peer.value.clone()],
            });
        }
    }
}

/// A queue with nobody on one side would block its other side forever.
fn check_queue_sides(q: &crate::spec::Queue, diags: &mut Vec<Diagnostic>) {
    let qn = &q.name.value;
    if q.from.value.is_empty() {
        diags.push(
            Diagnostic::at(
                Code::QueueWithoutProducers,
                q.from.span.clone(),
                format!("queue `{qn}` has no producer"),
            )
            .label("no process writes to it")
            .help(format!(
                "name its producers: from = [\"producer\"] under [queue.{qn}]"
            )),
        );
    }
    if q.to.value.is_empty() {
        diags.push(
            Diagnostic::at(
                Code::QueueWithoutConsumers,
                q.to.span.clone(),
                format!("queue `{qn}` has no consumer"),
            )
            .label("no process reads from it")
            .help(format!(
                "name its consumers: to = [\"worker\"] under [queue.{qn}]"
            )),
        );
    }
}

fn check_queue_self_feed(q: &crate::spec::Queue, diags: &mut Vec<Diagnostic>) {
    let qn = &q.name.value;
    for c in q.to.value.iter() {
        if let Some(p) = q.from.value.iter().find(|p| p.value == c.value) {
            diags.push(
                Diagnostic::at(
                    Code::QueueSelfFeed,
                    c.span.clone(),
                    format!(
                        "`{}` is both a producer and a consumer of queue `{qn}`",
                        c.value
                    ),
                )
                .label("also a consumer")
                .related(p.span.clone(), "a producer here")
                .help("a process would read back its own messages; use two queues, one each way"),
            );
        }
    }
}

/// Reports each replicated end of a pipe; true if there was one, so the
/// pipe is left out of the graph.
fn check_pipe_replicas(
    file: &JobFile,
    kind: EdgeKind,
    ends: [(&Sp<String>, usize); 2],
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let mut replicated = false;
    for (end, i) in ends {
        let p = &file.processes[i];
        if p.replicas.value > 1 {
            replicated = true;
            let shape = if kind == EdgeKind::Duplex {
                "duplex"
            } else {
                "one-way"
            };
            diags.push(
                Diagnostic::at(
                    Code::PipeReplicatedEndpoint,
                    end.span.clone(),
                    format!(
                        "`{}` has {} replicas, but a {shape} pipe has one process at each end",
                        p.name.value, p.replicas.value
                    ),
                )
                .label("replicated endpoint")
                .related(p.replicas.span.clone(), "replicated here")
                .help("to fan out to replicas or collect from them, use a [queue]"),
            );
        }
    }
    replicated
}

/// Groups, numbered in file order of their first member.
fn number_groups(uf: &mut UnionFind, n: usize) -> (Vec<StreamGroup>, Vec<usize>) {
    let mut group_of = vec![usize::MAX; n];
    let mut groups: Vec<StreamGroup> = Vec::new();
    let mut root_group: HashMap<usize, usize> = HashMap::default();
    for (i, slot) in group_of.iter_mut().enumerate() {
        let root = uf.find(i);
        let g = *root_group.entry(root).or_insert_with(|| {
            groups.push(StreamGroup::default());
            groups.len() - 1
        });
        groups[g].members.push(i);
        *slot = g;
    }
    (groups, group_of)
}

/// Gives each end its descriptor and each group its edges, both in file order.
fn assign_descriptors(
    mut ends: Vec<RawEnd>,
    group_of: &[usize],
    groups: &mut [StreamGroup],
) -> Vec<Vec<Endpoint>> {
    // Descriptors: first incoming -> 0, first outgoing -> 1, the rest 3, 4, ... in file order.
    // Duplex ends always take 3+: a socket on stdout would swallow the process's logging.
    ends.sort_by_key(|e| (e.process, e.order));
    let mut endpoints: Vec<Vec<Endpoint>> = vec![Vec::new(); group_of.len()];
    let mut group_edges: Vec<Vec<(usize, String)>> = vec![Vec::new(); groups.len()];
    for e in ends {
        let list = &mut endpoints[e.process];
        let has_in = list.iter().any(|x| x.fd == 0);
        let has_out = list.iter().any(|x| x.fd == 1);
        let next = 3 + list.iter().filter(|x| x.fd >= 3).count() as i32;
        let fd = match e.direction {
            Direction::In if !has_in => 0,
            Direction::Out if !has_out => 1,
            _ => next,
        };
        let g = group_of[e.process];
        if !group_edges[g].iter().any(|(_, name)| *name == e.edge) {
            group_edges[g].push((e.order, e.edge.clone()));
        }
        list.push(Endpoint {
            env: fd_env_name(&e.edge),
            edge: e.edge,
            kind: e.kind,
            direction: e.direction,
            fd,
            peers: e.peers,
        });
    }
    for list in &mut endpoints {
        list.sort_by_key(|e| e.fd);
    }
    for (group, mut edges) in groups.iter_mut().zip(group_edges) {
        edges.sort();
        group.edges = edges.into_iter().map(|(_, name)| name).collect();
    }
    endpoints
}

/// Checks that need whole groups: `max_parallel` and locks, since a group launches at once.
pub(super) fn check_group_limits(
    file: &JobFile,
    locks: &[Vec<usize>],
    streams: &Streams,
    diags: &mut Vec<Diagnostic>,
) {
    if let Some(max) = &file.graph.max_parallel {
        check_max_parallel(
            file,
            &streams.groups,
            max.value,
            Some(max.span.clone()),
            diags,
        );
    }
    for group in streams.groups.iter().filter(|g| !g.edges.is_empty()) {
        check_group_retries(file, group, &streams.endpoints, diags);
        check_group_locks(file, locks, group, diags);
    }
}

fn check_group_retries(
    file: &JobFile,
    group: &StreamGroup,
    endpoints: &[Vec<Endpoint>],
    diags: &mut Vec<Diagnostic>,
) {
    for &m in &group.members {
        let p = &file.processes[m];
        let pipe_edge = streams_endpoints_have_pipe(&endpoints[m]);
        if p.retries > 0 && pipe_edge {
            diags.push(
                Diagnostic::at(
                    Code::StreamGroupRetries,
                    p.name.span.clone(),
                    format!(
                        "`{}` has retries = {}, but it has a pipe edge, so it is not retried on its own",
                        p.name.value, p.retries
                    ),
                )
                .label("retries do not apply")
                .help("a pipe's other end is gone once it fails; only members whose edges are all queues rerun (they reattach)"),
            );
        }
        if p.restart != crate::spec::Restart::Never && pipe_edge {
            diags.push(
                Diagnostic::at(
                    Code::StreamGroupRetries,
                    p.name.span.clone(),
                    format!(
                        "`{}` has a restart policy, but it has a pipe edge, so it is never restarted",
                        p.name.value
                    ),
                )
                .label("restart does not apply")
                .help("a pipe's other end is gone once it exits; only members whose edges are all queues restart (they reattach)"),
            );
        }
    }
}

/// A group takes its members' locks all at once, so their replicas add up.
fn check_group_locks(
    file: &JobFile,
    locks: &[Vec<usize>],
    group: &StreamGroup,
    diags: &mut Vec<Diagnostic>,
) {
    let members = || {
        list_some(
            group
                .members
                .iter()
                .map(|&m| file.processes[m].name.value.as_str()),
        )
    };
    let mut demand: Vec<(usize, u64, usize)> = Vec::new();
    for &m in &group.members {
        for &l in &locks[m] {
            let r = u64::from(file.processes[m].replicas.value);
            match demand.iter_mut().find(|d| d.0 == l) {
                Some(d) => d.1 += r,
                None => demand.push((l, r, m)),
            }
        }
    }
    for (l, need, first) in demand {
        let lock = &file.locks[l];
        if need > u64::from(lock.capacity.value) {
            let p = &file.processes[first];
            let span = p
                .locks
                .iter()
                .find(|x| x.value == lock.name.value)
                .map(|x| x.span.clone())
                .unwrap_or(p.name.span.clone());
            diags.push(
                Diagnostic::at(
                    Code::StreamGroupLock,
                    span,
                    format!(
                        "the stream group {{{}}} needs lock `{}` {need} times at once, but its capacity is {}",
                        members(),
                        lock.name.value,
                        lock.capacity.value
                    ),
                )
                .label("taken by a member of a stream group")
                .related(lock.capacity.span.clone(), "capacity set here")
                .help(format!("members of a stream group run together: raise capacity to {need}, or take the lock in one member only")),
            );
        }
    }
}

/// `max_parallel` (from the file, with its span, or from `--max-parallel`)
/// against the largest stream group: a group must fit to launch at all.
pub(super) fn check_max_parallel(
    file: &JobFile,
    groups: &[StreamGroup],
    max: u32,
    span: Option<crate::diagnostic::Span>,
    diags: &mut Vec<Diagnostic>,
) {
    // Daemons take no slot (SPEC §3), so only the other members count.
    let size = |g: &StreamGroup| -> u64 {
        g.members
            .iter()
            .filter(|&&m| !file.processes[m].daemon.value)
            .map(|&m| u64::from(file.processes[m].replicas.value))
            .sum()
    };
    let Some(group) = groups
        .iter()
        .filter(|g| !g.edges.is_empty())
        .max_by_key(|g| size(g))
    else {
        return;
    };
    let size = size(group);
    if size <= u64::from(max) {
        return;
    }
    let members = list_some(
        group
            .members
            .iter()
            .map(|&m| file.processes[m].name.value.as_str()),
    );
    let (what, fix) = match span {
        Some(_) => (
            format!("max_parallel is {max}"),
            format!("set max_parallel = {size} or more"),
        ),
        None => (
            format!("--max-parallel is {max}"),
            format!("pass --max-parallel {size} or more"),
        ),
    };
    let mut d = Diagnostic::new(
        Code::MaxParallelTooSmall,
        span,
        format!(
            "{what}, but the stream group {{{members}}} runs {size} non-daemon processes at once"
        ),
    )
    .help(format!(
        "processes joined by pipes or queues start together: {fix}"
    ));
    if d.span.is_some() {
        d = d.label("too small for a stream group");
    }
    diags.push(d);
}

/// One-way pipes that form a loop (`a -> b`, `b -> a`): if every process in
/// it reads before it writes, none ever does. A warning, since a protocol
/// where one side writes first works.
fn pipe_cycles(file: &JobFile, index: &HashMap<&str, usize>, diags: &mut Vec<Diagnostic>) {
    let n = file.processes.len();
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut edge: HashMap<(usize, usize), &crate::spec::Pipe> = HashMap::default();
    for pipe in &file.pipes {
        let PipeEnds::OneWay { from, to } = &pipe.ends else {
            continue;
        };
        let (Some(&a), Some(&b)) = (index.get(from.value.as_str()), index.get(to.value.as_str()))
        else {
            continue;
        };
        if a != b && edge.insert((a, b), pipe).is_none() {
            adj[a].push(b);
        }
    }
    if edge.len() < 2 {
        return;
    }
    for component in super::cycles::strongly_connected(&adj) {
        let Some(path) = super::cycles::find_cycle(&adj, &component, component[0]) else {
            continue;
        };
        let name = |i: usize| file.processes[i].name.value.as_str();
        let hops: Vec<&crate::spec::Pipe> = (0..path.len())
            .map(|k| edge[&(path[k], path[(k + 1) % path.len()])])
            .collect();
        let mut loop_text: Vec<&str> = path.iter().map(|&i| name(i)).collect();
        loop_text.push(name(path[0]));
        let loop_text = super::cycles::shorten(&loop_text);
        let mut d = Diagnostic::at(
            Code::PipeCycle,
            hops[0].name.span.clone(),
            format!("one-way pipes form a loop: {loop_text}"),
        )
        .label(format!("pipe `{}`, part of the loop", hops[0].name.value))
        .help(if path.len() == 2 {
            format!(
                "if both `{}` and `{}` wait to read before they write, neither ever does: use one duplex pipe, between = [\"{}\", \"{}\"], or make sure one side writes first",
                name(path[0]), name(path[1]), name(path[0]), name(path[1])
            )
        } else {
            "if every process in the loop waits to read before it writes, none ever does: make sure one of them writes first, or break the loop with a queue".to_string()
        });
        for p in hops.iter().skip(1).take(8) {
            d = d.related(p.name.span.clone(), format!("pipe `{}`", p.name.value));
        }
        diags.push(d);
    }
}

struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n).collect(),
        }
    }
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
}

fn streams_endpoints_have_pipe(endpoints: &[Endpoint]) -> bool {
    endpoints.iter().any(|e| e.kind != EdgeKind::Queue)
}
