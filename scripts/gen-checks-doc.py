"""Regenerates docs/checks.md from tests/invalid/ and the real binary's output.
Run after changing a diagnostic:  cargo build && python3 scripts/gen-checks-doc.py"""
import re, subprocess, os, textwrap
def wrap(t):
    return "\n\n".join(textwrap.fill(p.strip(), width=79, break_long_words=False, break_on_hyphens=False) for p in t.strip().split("\n\n"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
J = ROOT + "/target/debug/jobgraph"
src = open(ROOT + "/src/code.rs").read()
codes = re.findall(r'(\w+) = "([a-z-]+)", (Error|Warning);', src)

P = {}  # code -> (rule, fix, extra)

P["unreadable-file"] = (
"""The file could not be read as a job file: it does not exist, it cannot be opened, it is not a regular file (a directory, FIFO, socket or device), it is larger than 32 MiB, or it is not valid UTF-8. jobgraph looks at the file's type before it opens it, so a FIFO never makes `validate` hang.

This is the only code without an example file in `tests/invalid/`, because the problem is the file itself. `tests/bad_input.rs` covers it. The diagnostic has no line or column, except that for non-UTF-8 input the message gives the line and column of the first bad byte.""",
"""Pass the path of a regular TOML file. Convert files in other encodings to UTF-8 (TOML requires it). Split generated files that are larger than 32 MiB.""",
None)

P["toml-syntax"] = (
"""The file is not valid TOML 1.0: an unclosed string or array, a key defined twice, a table defined twice, and so on. Nothing else is checked until the syntax is fixed, because there is no document to check yet. The message is the TOML parser's own, except in three common cases that jobgraph puts in its own words: an unclosed string is reported at its opening quote (the parser notices it only further on, as a missing comma or bracket), and a table or a key defined twice is marked at both definitions.""",
"""Fix the syntax at the marked place. Remember that in TOML a table header (`[process.setup]`) may appear only once, and a key only once per table.""",
["toml-syntax-2", "toml-syntax-3"])

P["unknown-key"] = (
"""A key that the format does not have, at the top level or inside any table. Misspelt keys are errors rather than being ignored: a silently ignored `timout` would leave a process with no time limit. When a known key is close, the help suggests it. Otherwise the help lists the keys that the table accepts.

Keys that other tools use for the same thing get jobgraph's name as the suggestion: `depends_on`, `needs` or `requires` is `after`; `command` or `args` is `cmd` (for a command line written as one string, `shell`); `working_dir` is `cwd`; `environment` is `env`; `healthcheck` or `readiness_probe` is `ready`; `scale` is `replicas`, and so on (docker compose, process-compose, GitHub Actions, systemd). A table inside a process that a process does not have, such as `[process.build.step]`, is reported as an unknown table: usually another process was meant, declared as `[process.step]`.""",
"""Correct the spelling, or remove the key. The [format reference](format.md) lists every key.""",
["unknown-key-2", "unknown-key-3", "unknown-key-4", "unknown-key-5", "unknown-key-6", "unknown-key-7", "unknown-key-8"])

P["unknown-value"] = (
"""A string key that takes one of a fixed set of words has some other value: `start`, an `after` condition, `restart`, `stdin`, `stdout` / `stderr`, a queue's `mode` or `framing`. The message lists the allowed words, and the help suggests the closest one. For `stdout` and `stderr`, a value that looks like a path (`stdout = "out.txt"`) gets the table form as its fix: `stdout = { file = "out.txt" }`.""",
"""Use one of the listed values. They are lower case and spelled exactly as shown (`"on-failure"`, not `"on_failure"`).""",
["unknown-value-2", "unknown-value-3", "unknown-value-4", "unknown-value-5", "unknown-value-6", "unknown-value-7"])

P["wrong-type"] = (
"""A value has the wrong TOML type. Typical cases: `cmd` given as a string, `daemon = "yes"`, `timeout = 10` without a unit, `replicas = "4"`, a bare string where a list is required (`after`, `locks`, a queue's `from` / `to`), a list where a pipe wants one name, an `env` value that is an array or a table, or `stdout = { … }` without a non-empty `file`. When the fix is clear, the help shows it.""",
"""Write the value with the type shown in the message. For example `after = ["setup"]`, `daemon = true` without quotes, and `timeout = "10s"` as a string with a unit.""",
["wrong-type-2", "wrong-type-3", "wrong-type-4", "wrong-type-5", "wrong-type-6"])

P["unsupported-version"] = (
"""`version` is present but is not the integer `1`. Only format version 1 exists. A file written for a later format must not be read as if it were version 1.""",
"""Write `version = 1`, or remove the line (it is optional).""",
None)

P["empty-graph"] = (
"""The file declares no process: it is empty, or it has only `[graph]`, `[env]`, locks and the like. A run would do nothing, which is almost certainly a mistake (a wrong file, or `[proces.x]`). The rule applies to the whole file, so the diagnostic has no line, and the human format prints it on one line. It is not reported when the file has other errors, since those errors may be the reason no process was found.""",
"""Add at least one `[process.NAME]` table.""",
None)

P["command-conflict"] = (
"""A process has both `cmd` and `shell`. They are two different ways of running a program (directly, or through `/bin/sh -c`), and jobgraph does not guess which one you meant.

In the real output below, a [`command-not-found`](#command-not-found) warning comes first, because `./load.sh` does not exist next to the example file. Diagnostics are listed in file order.""",
"""Keep `cmd` to run a program with exact arguments. Keep `shell` when you need pipes, redirection or variable expansion.""",
None)

P["command-missing"] = (
"""A process has neither `cmd` nor `shell`, so there is nothing to run. When the process has a misspelt key close to `cmd` or `shell` (say `shel`), only that [`unknown-key`](#unknown-key) is reported, not this as well.""",
"""Add `cmd = ["program", "arg", …]` or `shell = "command line"`.""",
None)

P["empty-argv"] = (
"""`cmd = []` has no program. `cmd = ["", …]` has an empty program name. `shell = ""` (or only spaces) has an empty command line. None of them can be run.""",
"""Name the program: `cmd = ["echo", "hi"]`, or write a real `shell` command.""",
["empty-argv-2", "empty-argv-3"])

P["bad-name"] = (
"""A process, lock, queue or pipe name does not match `[A-Za-z_][A-Za-z0-9_-]*`. Names appear in messages, in `plan`, in `JOBGRAPH_FD_<EDGE>` variable names and in instance names like `worker[3]`, so they are kept to a plain set of characters. The help suggests a fixed name. The same code is used for an empty `[graph] name` and for an environment variable name that is empty or contains `=`.""",
"""Rename the table, and every reference to it, to a valid name, for example the one the help suggests.""",
["bad-name-2", "bad-name-3"])

P["unknown-process"] = (
"""A process name in `after`, `parent`, a queue's `from` / `to`, or a pipe's `from` / `to` / `between` is not declared. The help suggests a close name when there is one. Otherwise it lists the declared processes (up to eight).""",
"""Fix the spelling, or declare the missing process with `[process.NAME]`.""",
["unknown-process-2", "unknown-process-3", "unknown-process-4"])

P["unknown-lock"] = (
"""A process lists a lock in `locks` that has no `[lock.NAME]` table. Locks are declared explicitly, so a typo cannot silently create a new lock that protects nothing.""",
"""Declare the lock (`[lock.db]`, with `capacity = 1` as the default), or fix the name.""",
None)

P["cycle"] = (
"""The `after` and `parent` links form a loop, so no process in the loop can ever start. (A child needs its parent to be running, so `parent` counts as a dependency.) The message prints the whole loop, and each arrow reads "waits for": `extract -> load` means `extract` waits for `load`. Every link of the loop is marked in the file. A process that waits for itself is a loop of one.""",
"""Remove one of the links. Usually one of them is reversed by mistake.""",
["cycle-2", "cycle-3"])

P["daemon-with-children"] = (
"""A process names a daemon as its `parent`. Daemons are stopped as soon as their own parent (or the whole graph) has finished, so they cannot guarantee a lifetime to children of their own. Python's `multiprocessing` forbids this too ("daemonic processes are not allowed to have children").""",
"""Make the child a child of a non-daemon process, or a top-level process. Or drop `daemon = true` from the parent.""",
None)

P["ready-without-probe"] = (
"""A process waits for another with the condition `"ready"`, but the other process has no `ready` table, so it could never become ready.""",
"""Add a probe to the other process (`ready = { tcp = "127.0.0.1:8080" }`, or a `cmd`, `log` or `file` probe). Or wait for `"start"` instead.""",
None)

P["stream-group-deadlock"] = (
"""Processes joined by pipes and queues form a [stream group](format.md#stream-groups), and a group launches as one unit. So an `after` or `parent` link between two members of the same group can never be satisfied: the waiting member would have to start after the other, but they start at the same moment.

The same holds for a loop that runs through several groups. If group A waits for group B, and something in B waits for A, neither group can launch. Such a loop is printed with `->` for "waits for" and `~` joining two members of one group: `sum -> check -> gen ~ sum` means `sum` waits for `check`, `check` waits for `gen`, and `gen` launches together with `sum`.""",
"""Remove the dependency, or move the stream edge so that the two processes are not in one group. If a consumer must really wait until the producer has finished, write to a file instead of a stream and use `after`.""",
["stream-group-deadlock-2", "stream-group-deadlock-3"])

P["queue-without-producers"] = (
"""A queue has an empty (or missing) `from`. With no producer it never gets a message, and its consumers would only ever see end-of-file.""",
"""List the producers: `from = ["load"]`. Or remove the queue.""",
None)

P["queue-without-consumers"] = (
"""A queue has an empty (or missing) `to`. Its messages would go nowhere, and once the buffer is full its producers would block forever.""",
"""List the consumers: `to = ["worker"]`. Or remove the queue.""",
None)

P["duplicate-reference"] = (
"""A name appears twice in one list: `after`, `locks`, or a queue's `from` or `to`. A repeated dependency or lock is at best noise; a repeated queue endpoint would give the process two descriptors for one queue. The second mention is marked, and the first is shown too.""",
"""Remove the repeated name.""",
["duplicate-reference-2"])

P["queue-self-feed"] = (
"""A process is both a producer and a consumer of one queue. It would read back its own messages, and the queue could never reach end-of-file while that process runs.""",
"""Use two queues, one for each direction. For request/response between two processes, a duplex pipe (`between = […]`) is simpler.""",
None)

P["pipe-replicated-endpoint"] = (
"""One end of a pipe is a replicated process. A pipe joins exactly one process to one process (a kernel pipe or one socketpair), so it cannot fan out to N replicas or collect from them. This applies to one-way and duplex pipes alike.""",
"""Use a `[queue]`: a replicated consumer means all its replicas (`balance` spreads the messages over them), and a replicated producer means all of them.""",
["pipe-replicated-endpoint-2"])

P["pipe-to-itself"] = (
"""Both ends of a pipe are the same process. A one-way pipe to itself would fill up and block, and a socketpair with itself has no one to talk to.""",
"""Point the other end at a different process, or remove the pipe.""",
["pipe-to-itself-2"])

P["pipe-shape"] = (
"""A pipe must be either one-way (`from` and `to`, each one process name) or duplex (`between`, exactly two names). This rule reports a pipe that mixes the two forms, has only one of `from` / `to`, has no ends at all, or has a `between` that does not name exactly two processes.""",
"""Write `from = "a"` with `to = "b"`, or write `between = ["a", "b"]`. For more than two processes, use a `[queue]`.""",
["pipe-shape-2"])

P["max-parallel-too-small"] = (
"""`[graph] max_parallel` is smaller than a stream group, counting replicas. A stream group has to launch all at once, so with this limit it could never start.""",
"""Raise `max_parallel` to at least the number in the help, or make the group smaller.""",
["max-parallel-too-small-2"])

P["bad-duration"] = (
"""A duration string does not parse. Causes: an unknown unit, no unit at all (`"10"`), a negative value, an empty string, a duration longer than the maximum of `"3650d"` (about 10 years), or zero where zero makes no sense (`timeout`, `ready.interval`, `ready.timeout`). The maximum holds for every duration key (`timeout`, `retry_delay`, `[graph] shutdown_grace`, `ready.interval`, `ready.timeout`): a longer one is a typo, and the cap keeps every deadline the runtime computes far from the limits of the system clock. A bare number without quotes is [`wrong-type`](#wrong-type) instead. See [Durations](format.md#durations).""",
"""Write a number and a unit: `"250ms"`, `"10s"`, `"5m"`, `"1h30m"`.""",
["bad-duration-2", "bad-duration-3", "bad-duration-4"])

P["bad-signal"] = (
"""`stop_signal` is not a signal name, or names a signal that pauses or resumes a process instead of ending it (`SIGSTOP`, `SIGTSTP`, `SIGTTIN`, `SIGTTOU`, `SIGCONT`): stopping with one of those would only wait out the grace period. Names are upper case, with or without the `SIG` prefix (`"SIGTERM"`, `"TERM"`). A name that is right except for case gets the correct spelling as its suggestion. Other names get the closest known signal, when one is close.""",
"""Use a standard signal name in upper case, such as `"SIGTERM"`, `"SIGINT"` or `"SIGHUP"`.""",
["bad-signal-2", "bad-signal-3"])

P["bad-capacity"] = (
"""A queue's `capacity` is outside 1 – 16,777,216, or a lock's `capacity` is outside 1 – 1,000,000. A queue with no buffer could pass no message. A lock that nobody may hold would block its processes forever. The upper limits keep memory bounded and catch typos.""",
"""Use a value in the range. The defaults are 1024 for a queue and 1 for a lock.""",
["bad-capacity-2"])

P["bad-replicas"] = (
"""`replicas` is outside 1 – 65,536. Zero replicas would silently remove the process, and a very large count is almost always a typo that would exhaust the machine.""",
"""Use a count from 1 to 65,536. To disable a process, remove it or comment it out.""",
["bad-replicas-2"])

P["bad-number"] = (
"""Another number is out of range: `retries` or `max_restarts` outside 0 – 1,000,000, an exit code in `success_codes` outside 0 – 255 (exit codes are one byte, so 256 could never match), an empty `success_codes` (the process could never succeed), or `max_parallel` below 1.""",
"""Use a value in the range that the message gives.""",
["bad-number-2", "bad-number-3"])

P["bad-probe"] = (
"""A `ready` or `health` table does not hold exactly one valid probe. The cases: no probe at all (only `interval` / `timeout`), two or more probes, a `tcp` value that is not `host:port` with a port from 1 to 65535, an `http` value that is not a plain `http://host[:port]/path` URL (the probe talks to the process itself, without TLS), a `status` outside 100 – 599 or without an `http` probe, an empty `cmd` or `file`, or a `log` regex that does not compile (`log` is for `ready` only). The regex syntax is Rust's `regex` crate, which has no backreferences or look-around.""",
"""Keep exactly one of `tcp`, `http`, `cmd`, `log` or `file`. If you need several conditions, combine them in one `cmd` probe (`cmd = ["sh", "-c", "test -f a && nc -z host 80"]`).""",
["bad-probe-2", "bad-probe-3", "bad-probe-4", "bad-probe-5", "bad-probe-6", "bad-probe-7"])

P["bad-for-each"] = (
"""`for_each` cannot make its instances: an empty list, a glob that matches no file (relative to the job file's directory, expanded when the file is checked, so at the start of every run too), an invalid glob, or `for_each` together with `replicas` (`for_each` decides the count).""",
"""List at least one item, fix the pattern, or drop `replicas`.""",
["bad-for-each-2", "bad-for-each-3"])

P["always-daemon"] = (
"""A daemon has `always = true`. An `always` step runs once its `after` targets are finished, like a `finally` block or DAGMan's FINAL node; a daemon runs alongside others until it is stopped, so the two cannot mix.""",
"""Drop `daemon = true` (a cleanup step is an ordinary process), or drop `always`.""",
[])

P["tty-stream"] = (
"""A process has `tty = true`, but its stdout or stderr is a stream edge (a pipe or queue on descriptor 1 or 2). Its output cannot go both to a pseudo-terminal and to the edge.""",
"""Drop `tty`, or let the edge use another descriptor (a process's first outgoing edge takes stdout; others get fds 3, 4, …).""",
[])

P["nul-character"] = (
"""A string holds a NUL character (written `\\u0000` in TOML). The operating system passes command-line arguments, environment variables and paths as NUL-terminated strings, so such a value cannot reach the process intact: the process would fail to start, and `graph` would write a raw NUL into its output. The rule covers every string of the file: the graph name, `cmd` arguments, `shell`, `cwd`, `env` values, probe fields, `stdout` / `stderr` files and so on. (A NUL in a name or an `env` key is reported as [`bad-name`](#bad-name).)""",
"""Remove the `\\u0000`. To pass binary data to a process, use a file or a stream edge.""",
["nul-character-2"])

P["edge-name-clash"] = (
"""Two stream edges (queues or pipes, in any combination) would get the same `JOBGRAPH_FD_<EDGE>` variable. The variable upper-cases the name and turns `-` into `_`, so `raw-events`, `raw_events` and `Raw_Events` all give `JOBGRAPH_FD_RAW_EVENTS`, and a process on both edges could not tell them apart.""",
"""Rename one of the edges.""",
None)

P["stream-group-lock"] = (
"""The members of a stream group launch together, so they must all hold their locks at the same time. This rule reports a group whose members, replicas counted, need a lock more times than its `capacity` allows. Such a group could never start. The spec does not list this check. jobgraph adds it because the alternative is a run that hangs.""",
"""Raise the lock's `capacity` to the number in the message, or take the lock in only one member of the group.""",
None)

P["parent-replicated"] = (
"""A process names a replicated process as its `parent`. A child belongs to exactly one parent, and with N replicas it is unclear whose lifetime would govern it: whether it starts once or N times, and which replica's end stops it. See [decisions](decisions.md#a-replicated-process-cannot-be-a-parent).""",
"""Give the child a parent that is not replicated. To make it wait for the replicated process, use `after` instead. To get one helper per replica, start the helper from the replica's own command.""",
None)

P["unknown-var"] = (
"""A `{{ name }}` placeholder names no var: it is neither declared in `[vars]` nor a built-in (`{{ name }}`, `{{ replica }}`, `{{ item }}`). The span is the placeholder inside the string, and the help suggests the closest var. The built-ins have limits: `{{ item }}` exists only in a process with `for_each`, and `{{ name }}` only inside a process, not in the graph-wide `[env]`. The same code, without a line, reports a `--set NAME=VALUE` whose NAME the file does not declare; that is a usage error (exit status 2).

Only `{{` followed by a name and `}}` is a placeholder: `{{.State}}` (a Go template, as in `docker inspect -f`) is left as it is. A literal `{{` is written `{{{{`.""",
"""Correct the name, or declare the var: `[vars]` `port = "8080"`. For a literal `{{ name }}`, write `{{{{ name }}`.""",
["unknown-var-2"])

P["unset-env-var"] = (
"""A var is read from the engine's environment (`port = { env = "PORT" }`), the variable is not set (or not UTF-8), and the var has no `default`. The file would otherwise run with an empty value, which is rarely what was meant. A `--set` of the var replaces the environment, so the variable need not be set then.""",
"""Set the variable, give the var a default (`port = { env = "PORT", default = "8080" }`), or pass `--set port=8080`.""",
None)

P["bad-env-file"] = (
"""An `env_file` (at `[graph]` level or in a process) cannot be used: the file does not exist, is not a regular file, cannot be read, or is not valid dotenv. The span is the path in the job file; the message names the file and, for a bad line, its line number. Env files are read by `validate` too, so a missing file is found before a run. The format is dotenv as read by the `dotenvy` crate: `NAME=value` lines, `#` comments, single or double quotes, an optional `export`.""",
"""Create the file or correct the path (relative to the job file's directory). For a file that may be missing, write `env_file = { path = ".env", optional = true }`. Fix the line named in the message.""",
["bad-env-file-2"])

P["bad-include"] = (
"""An `include` cannot be used: the file does not exist or cannot be read as a job file, it is part of an include cycle (a file that includes itself, directly or through others; the message prints the chain), or an included file sets `[graph]` or `[slurm]`, which only the main file may. The span is the path in the `include` list, in the file that names it, which may itself be an included file. A file included by several others is read once; that is not a cycle.""",
"""Correct the path (relative to the directory of the file that has the `include`), remove one include of the cycle, or move `[graph]` / `[slurm]` to the main file.""",
["bad-include-2", "bad-include-3"])

P["bad-slurm-option"] = (
"""A Slurm setting (in `[slurm]` or a process's `slurm` table) that Slurm would refuse, or that would take a unit out of jobgraph's hands: a `mem` that is not a whole number with at most one of K, M, G, T (Slurm reads `8G`, not `8GB` or `1.5G`); a `partition` or `account` with spaces; an `extra` entry that is not an option (`"gpu:1"` split from its `--gres`); an `extra` option that jobgraph sets on every unit itself (`--job-name`/`-J`, `--output`/`-o`, `--error`/`-e`, `--input`/`-i`, `--chdir`/`-D`, `--jobid`, `--parsable`, `--wrap`, `--ntasks`/`-n`, `--array`/`-a`, `--dependency`/`-d`, `--overlap`, `--exact`); or an `orphan_timeout` under 2 s. jobgraph names every unit `jobgraph-<run>-<instance>` to find and cancel it, follows its output files for the log, and keeps dependencies in the engine, so these options would break the run. A bad `cpus` is [`bad-number`](#bad-number). See [Running on Slurm](slurm.md).""",
"""Write `mem = "8G"`; write each option whole, `extra = ["--gres=gpu:1"]`; drop options jobgraph owns (use `after` for dependencies, `stdout = { file = ... }` for output files, `replicas` or `for_each` for arrays).""",
["bad-slurm-option-2", "bad-slurm-option-3"])

P["duplicate-name"] = (
"""A process, lock, queue, pipe, var or `[env]` variable is defined both in a file and in a file it includes (or in two included files). Included files share one set of names, and jobgraph does not let one silently replace the other. The diagnostic marks both definitions, each in its own file.""",
"""Rename one of the two, or keep only one definition, usually in the shared file.""",
None)

P["command-not-found"] = (
"""**Warning.** The program in `cmd` would not start. Either it is not found on the PATH, or, for a program with a `/`, the path does not exist, is a directory, or is not executable. The PATH searched is the process's own `env.PATH`, else `[env] PATH`, else jobgraph's own PATH. A relative path with a `/` is resolved against the process's `cwd`, which defaults to the job file's directory.

This is a warning, not an error, because the machine that runs the graph may differ from the one that validates it. `shell` commands are not checked, since only the shell knows what they run. Neither are programs that contain `{replica}` (or `{{ replica }}`), or the `{{ item }}` of a `for_each` process. `validate` only looks at the file system. It never runs the program.""",
"""Install the program, give its full path, or add its directory to `PATH` in `[env]` or in the process's `env`.""",
None)

P["unused-lock"] = (
"""**Warning.** A `[lock.NAME]` is declared, but no process lists it in `locks`. It is harmless, but it usually means that a `locks = […]` line is missing, so processes you meant to serialize would run at the same time.""",
"""Add `locks = ["NAME"]` to the processes that share the resource, or remove the lock.""",
None)

P["stream-group-retries"] = (
"""A member of a stream group with a pipe edge (one-way or duplex) has `retries`. Members launch together and fail together; once one fails, the other end of its pipe is gone, so it cannot be run again on its own, and `retries` does not apply to it. A member whose stream edges are all queues is retried (and restarted): it reattaches to its queues.""",
"""Remove `retries`, or join the processes with a queue instead of a pipe.""",
None)

P["after-daemon"] = (
"""A process that is not a daemon waits (`after`, condition `success` or `exit`) for a daemon. Daemons are stopped only once every non-daemon process has finished, so unless the daemon exits on its own, the waiting process can never start and the run hangs until a timeout or Ctrl-C. It is a warning, not an error, because a daemon may well be a finite program that exits by itself.""",
"""Wait for the daemon's `"start"` (or `"ready"`, with a probe) instead, or make the awaited process a non-daemon.""",
None)

P["shell-syntax-in-cmd"] = (
"""**Warning.** An argument of `cmd` holds shell syntax: a variable (`$TARGET`, `${TARGET}`), a command substitution (`$(date)`), or a whole-word operator (`|`, `||`, `&&`, `;`, `>`, `>>`, `<`, `2>&1`, `&`). `cmd` is exec'd directly, with no shell, so the program receives the text as it is written: `cmd = ["echo", "${TARGET}"]` prints `${TARGET}`, and `cmd = ["cat", "a", "|", "wc"]` asks `cat` to open a file named `|`. jobgraph interpolates only `{replica}`.

It is a warning, not an error, because the literal text may be what the program wants. It is not given when the program, or a word before the argument, is a shell or a program with its own `$` syntax (`sh`, `bash`, `awk`, `sed`, `perl`, `python`, `jq`, `make`, `find`, `ssh`, `docker` and a few more), so `cmd = ["sh", "-c", "echo $HOME"]` and `cmd = ["awk", "{print $NF}"]` pass. One warning per process.""",
"""Write the command line as `shell = "echo ${TARGET}"` to have `/bin/sh` expand it, or write the value itself into `cmd`. The environment is the same either way: `env` and `[env]` are set before the shell starts.""",
["shell-syntax-in-cmd-2"])

P["pipe-cycle"] = (
"""**Warning.** One-way pipes form a loop: `a` writes to `b` and `b` writes back to `a` (or a longer loop through more processes). A kernel pipe holds only 64 KiB, and a process that waits to read before it writes waits forever if the process it reads from is waiting too. The static check cannot see the protocol, so this is a warning: a loop where one side writes first (a request, then a reply) works. Each loop is reported once, with every pipe in it marked (up to nine).""",
"""For request and reply between two processes, use one duplex pipe, `between = ["a", "b"]`: one socketpair, both directions, one descriptor each. Otherwise make sure one side writes before it reads, or put a queue in the loop (the broker buffers up to its `capacity`).""",
None)

P["buffered-log-probe"] = (
"""**Warning.** A process with a `log` readiness probe runs Python (`python`, `python3`, `python3.12`..., as the program of `cmd` or as a word of `shell`) without `-u` and without `PYTHONUNBUFFERED` in its `env` or in `[env]`. Python block-buffers stdout when it is a pipe, as it is under jobgraph, so a line printed with plain `print()` reaches the log (and the probe) only once 8 KiB are written or the program exits. The probe then times out and the process fails, with no output shown. A `shell` line that mentions `PYTHONUNBUFFERED` or `stdbuf` is not warned about. See [Output buffering](runtime.md#output-buffering).""",
"""Run Python with `-u` (`cmd = ["python3", "-u", "server.py"]`), or set `PYTHONUNBUFFERED = "1"` in the process's `env`, or flush after the line the probe waits for (`print(..., flush=True)`). For other programs, `stdbuf -oL program` makes C stdio line-buffered.""",
["buffered-log-probe-2"])

P["slurm-time-before-timeout"] = (
"""**Warning.** A process has a `timeout`, and its Slurm `time` limit (its own `slurm.time`, else `[slurm] time`) is not longer than the timeout plus `shutdown_grace`. On Slurm the engine enforces `timeout` itself (stop signal, grace, then kill, and a retry if `retries` allows); Slurm's `time` ends the unit on its own terms, and coarsely (a 5 s limit fired after about 80 s in our tests). A `time` that comes first makes the `timeout` dead text. Local runs ignore `slurm` settings, so this is a warning.""",
"""Make `time` longer than `timeout` + `shutdown_grace` (the message suggests a value), or leave `time` out: for a process with a `timeout`, jobgraph then asks Slurm for that plus 2 minutes, rounded up to whole minutes.""",
[])

P["daemons-only"] = (
"""**Warning.** Every process is a daemon. Top-level daemons are stopped once every non-daemon process has finished, and here there are none, so the run would end as soon as it starts.""",
"""Make the main process a non-daemon (`daemon = false`, the default). Its daemons then live as long as it does.""",
None)

ALSO = {"stream-group-deadlock": ["stream-group-deadlock-3"], "wrong-type": ["wrong-type-3"], "bad-signal": ["bad-signal-2"]}

def run(args):
    env = dict(os.environ, NO_COLOR="1")
    r = subprocess.run([J] + args, cwd=ROOT, capture_output=True, text=True, env=env)
    return r.stdout + r.stderr, r.returncode

out = []
out.append("""# Checks

`jobgraph validate` (and `plan`, `graph` and `run`, before they do anything
else) checks a job file against the rules below. Each rule has a stable
kebab-case **code**. The code appears in the human output, in the `code` field
of `--format json`, and in the title of GitHub annotations, so scripts can
match on it.

- **Errors** make the file invalid: `validate` exits 1, and `plan`, `graph` and
  `run` refuse the file.
- **Warnings** (the codes marked *warning* in the table) are reported, but the file stays valid
  and `validate` exits 0.

jobgraph reports every problem it can find in one pass, not only the first
one. The exceptions: a TOML syntax error stops all other checks, and a problem
found while reading a value (a bad type, for example) can hide the
graph-level checks that depend on that value.

Each section below gives the rule and the reason for it, the smallest file that
breaks it (the file from `tests/invalid/`), the real output of
`jobgraph validate` on that file, and how to fix it.

""")
rows = []
for variant, code, sev in codes:
    rows.append(f"| [`{code}`](#{code}) | {sev.lower()} |")
out.append("| code | severity |\n|---|---|\n" + "\n".join(rows) + "\n\n")

for variant, code, sev in codes:
    rule, fix, extra = P[code]
    out.append(f"## {code}\n\n")
    out.append(f"*{sev.lower()}*\n\n")
    out.append(wrap(rule) + "\n\n")
    if code == "unreadable-file":
        o1, rc1 = run(["validate", "jobs/"])
        o2, rc2 = run(["validate", "tests/invalid/missing.toml"])
        out.append("Output:\n\n```text\n$ jobgraph validate jobs/\n" + o1 + "$ jobgraph validate tests/invalid/missing.toml\n" + o2 + "```\n\n")
        out.append(f"Exit status: {rc1}.\n\n")
    else:
        path = f"tests/invalid/{code}.toml"
        text = open(os.path.join(ROOT, path)).read()
        o, rc = run(["validate", path])
        out.append(f"Example (`{path}`):\n\n```toml\n{text}```\n\n")
        out.append(f"Output:\n\n```text\n$ jobgraph validate {path}\n{o}```\n\n")
        out.append(f"Exit status: {rc}.\n\n")
        for alt in ALSO.get(code, []):
            apath = f"tests/invalid/{alt}.toml"
            atext = open(os.path.join(ROOT, apath)).read()
            ao, arc = run(["validate", apath])
            out.append(f"A second example (`{apath}`):\n\n```toml\n{atext}```\n\n")
            out.append(f"```text\n$ jobgraph validate {apath}\n{ao}```\n\n")
            extra = [e for e in extra if e != alt]
        if extra:
            links = ", ".join(f"[`{e}.toml`](../tests/invalid/{e}.toml)" for e in extra)
            out.append(f"More examples: {links}.\n\n")
    out.append(wrap("**Fix:** " + fix.strip()) + "\n\n")

open(ROOT + "/docs/checks.md", "w").write("".join(out).rstrip() + "\n")
missing = [c for _, c, _ in codes if c not in P]
print("codes:", len(codes), "missing prose:", missing)
