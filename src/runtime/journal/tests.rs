//! The journal's unit tests: reading, writing, locking, starting afresh.

use super::*;

/// One whole run: opened with `cached`, then `records` (instance, status,
/// key), then closed.
fn write_run(path: &Path, run: &str, cached: &[(&str, &str)], records: &[(&str, &str, &str)]) {
    let mut j = Journal::open(path, "g", run, cached).unwrap();
    for &(i, s, k) in records {
        j.record(i, s, k).unwrap();
    }
    j.close().unwrap();
}

#[test]
fn a_record_is_in_the_file_within_milliseconds_without_waiting_for_its_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.journal");
    let mut j = Journal::open(&path, "g", "1", &[]).unwrap();
    j.record("a", "ok", "k1").unwrap();
    // Well before SYNC_EVERY: the record was written, so a killed engine keeps it.
    let mut seen = false;
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(2));
        if std::fs::read_to_string(&path)
            .unwrap()
            .contains("\"i\":\"a\"")
        {
            seen = true;
            break;
        }
    }
    assert!(seen, "the record was not written before close");
    j.close().unwrap();
    assert!(last_run(&path, "g").unwrap().ok_with("a", "k1"));
}

#[test]
fn the_last_run_wins_and_a_cut_line_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.journal");
    write_run(&path, "1", &[], &[("a", "ok", "k1"), ("b", "failed", "k2")]);
    write_run(&path, "2", &[], &[("a", "cached", "k1"), ("b", "ok", "k2")]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"i\":\"c\",\"s\":\"o")
        .unwrap();
    let last = last_run(&path, "g").unwrap();
    assert!(last.ok_with("a", "k1") && last.ok_with("b", "k2"));
    assert!(!last.ok_with("a", "other") && !last.ok_with("c", "k"));
}

#[test]
fn another_graphs_or_a_corrupt_journal_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.journal");
    Journal::open(&path, "other", "1", &[]).unwrap();
    let err = last_run(&path, "g").unwrap_err();
    assert!(matches!(&err, JournalError::OtherGraph { found, .. } if found == "other"));
    assert!(err
        .to_string()
        .contains("belongs to graph `other`, not `g`"));
    std::fs::write(&path, "{\"run\":\"x\",\"graph\":\"g\",\"version\":99}\n").unwrap();
    let err = last_run(&path, "g").unwrap_err();
    assert!(matches!(err, JournalError::Version { found: 99, .. }));
    assert!(err.to_string().contains("version 99"));
    std::fs::write(&path, "garbage\n").unwrap();
    let err = last_run(&path, "g").unwrap_err();
    assert!(matches!(err, JournalError::NoRun { line: 1, .. }), "{err}");
    std::fs::write(&path, "{\"run\": 12}\n").unwrap();
    let err = last_run(&path, "g").unwrap_err();
    assert!(
        matches!(err, JournalError::Corrupt { line: 1, .. }),
        "{err}"
    );
    assert!(last_run(&dir.path().join("none"), "g").is_ok());
}

#[test]
fn a_bad_run_is_skipped_and_a_later_run_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.journal");
    std::fs::write(
        &path,
        "{\"run\":\"1\",\"graph\":\"other\",\"version\":1}\n{\"i\":\"z\",\"s\":\"ok\",\"k\":\"kz\"}\n{\"run\":\"2\",\"gra\n",
    )
    .unwrap();
    assert!(last_run(&path, "g").is_err(), "the last run is unusable");
    write_run(&path, "3", &[("a", "k1")], &[("b", "ok", "k2")]);
    let last = last_run(&path, "g").unwrap();
    assert!(last.ok_with("a", "k1") && last.ok_with("b", "k2"));
    assert!(
        !last.ok_with("z", "kz"),
        "another graph's records never count"
    );
}

#[test]
fn cached_records_are_written_with_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.journal");
    let j = Journal::open(&path, "g", "1", &[("a", "k1"), ("b", "k2")]).unwrap();
    // Before any record or close: a kill now still leaves them.
    let last = last_run(&path, "g").unwrap();
    assert!(last.ok_with("a", "k1") && last.ok_with("b", "k2"));
    drop(j);
}

#[test]
fn a_second_run_on_one_journal_is_refused_while_the_first_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.journal");
    let mut first = Journal::open(&path, "g", "1", &[]).unwrap();
    let err = Journal::open(&path, "g", "2", &[]).err().expect("busy");
    assert!(matches!(err, JournalError::Busy { .. }), "{err}");
    first.close().unwrap();
    drop(first);
    assert!(Journal::open(&path, "g", "3", &[]).is_ok());
}

#[test]
fn fingerprints_are_stable_and_separate_parts() {
    assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
    assert_ne!(fingerprint(&["ab", ""]), fingerprint(&["a", "b"]));
}

#[test]
fn a_run_after_a_cut_line_starts_on_a_line_of_its_own_and_junk_before_runs_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.journal");
    std::fs::write(&path, "garbage\n").unwrap();
    write_run(&path, "1", &[], &[("a", "ok", "k1"), ("c", "ok", "k3")]);
    // Killed in the middle of its last record...
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() - 8]).unwrap();
    // ...and the next run records `a` only.
    write_run(&path, "2", &[], &[("a", "ok", "k1")]);
    let last = last_run(&path, "g").unwrap();
    assert!(last.ok_with("a", "k1"));
    assert!(!last.ok_with("c", "k3"), "`c` was not in the last run");
    // A journal written before that fix has the header glued on.
    std::fs::write(
        &path,
        "{\"run\":\"1\",\"graph\":\"g\",\"version\":1}\n{\"i\":\"c\",\"s\":\"ok\",\"k\":\"k3\"}\n{\"i\":\"b\",\"s\":\"ok\",\"k{\"run\":\"2\",\"graph\":\"g\",\"version\":1}\n{\"i\":\"a\",\"s\":\"ok\",\"k\":\"k1\"}\n",
    )
    .unwrap();
    let last = last_run(&path, "g").unwrap();
    assert!(last.ok_with("a", "k1") && !last.ok_with("c", "k3"));
}

#[test]
fn a_graph_name_never_puts_the_journal_outside_its_directory() {
    let base = Path::new("/w");
    for (name, file) in [
        ("nightly", "nightly.journal"),
        ("../../escaped", "_.._.._escaped.journal"),
        ("a/b", "a_b.journal"),
        (".", "_..journal"),
        ("", "_.journal"),
    ] {
        assert_eq!(default_path(base, name), base.join(".jobgraph").join(file));
    }
}

/// The runs in a journal's text: how many headers it holds.
fn runs_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("{\"run\""))
        .count()
}

#[test]
fn a_journal_keeps_only_the_last_run_however_many_there_were() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.journal");
    for run in 0..20 {
        let cached: &[(&str, &str)] = match run % 2 {
            0 => &[],
            _ => &[("a", "k1")],
        };
        let mut j = Journal::open(&path, "g", &run.to_string(), cached).unwrap();
        j.record("b", "ok", "k2").unwrap();
        j.close().unwrap();
        assert_eq!(runs_in(&path), 1, "after run {run}");
    }
    let last = last_run(&path, "g").unwrap();
    assert!(last.ok_with("a", "k1") && last.ok_with("b", "k2"));
}

#[test]
fn a_resumed_run_replaces_the_journal_and_holds_the_new_file_s_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.journal");
    write_run(&path, "1", &[], &[("a", "ok", "k1")]);
    let resumed = Journal::open(&path, "g", "2", &[("a", "k1")]).unwrap();
    assert!(last_run(&path, "g").unwrap().ok_with("a", "k1"));
    assert_eq!(runs_in(&path), 1);
    assert!(!dir.path().join("g.journal.new").exists());
    let err = Journal::open(&path, "g", "3", &[]).err().expect("busy");
    assert!(matches!(err, JournalError::Busy { .. }), "{err}");
    drop(resumed);
}

#[test]
fn a_journal_behind_a_symlink_stays_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real.journal");
    let link = dir.path().join("g.journal");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    write_run(&link, "1", &[], &[]);
    write_run(&link, "2", &[("a", "k1")], &[]);
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(last_run(&target, "g").unwrap().ok_with("a", "k1"));
}

#[test]
fn a_resumed_run_that_cannot_replace_the_journal_appends_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.journal");
    write_run(&path, "1", &[], &[("a", "ok", "k1")]);
    // Where the new file would go, a directory: the journal is kept and appended to.
    std::fs::create_dir(dir.path().join("g.journal.new")).unwrap();
    write_run(&path, "2", &[("a", "k1")], &[("b", "ok", "k2")]);
    assert_eq!(runs_in(&path), 2);
    let last = last_run(&path, "g").unwrap();
    assert!(last.ok_with("a", "k1") && last.ok_with("b", "k2"));
}

#[test]
fn a_file_of_the_user_s_beside_the_journal_is_kept_and_a_stale_start_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.journal");
    let beside = dir.path().join("g.journal.new");
    write_run(&path, "1", &[], &[]);
    std::fs::write(&beside, "the user's notes\n").unwrap();
    write_run(&path, "2", &[("a", "k1")], &[]);
    assert_eq!(
        std::fs::read_to_string(&beside).unwrap(),
        "the user's notes\n"
    );
    assert!(last_run(&path, "g").unwrap().ok_with("a", "k1"));
    // What a run killed before its rename leaves is removed by the next one.
    std::fs::write(&beside, "{\"run\":\"9\",\"graph\":\"g\",\"version\":1}\n").unwrap();
    write_run(&path, "3", &[("a", "k1")], &[]);
    assert!(!beside.exists());
    assert_eq!(runs_in(&path), 1);
}
