//! Fuzz target: any bytes as a job file, through the whole static path —
//! decode, every check, every diagnostic renderer, and for a valid file the
//! plan and both graph renderers. Nothing may panic or hang.
//! Run: `cargo +nightly fuzz run check` (from the repository root).
#![no_main]

use jobgraph::report::{render_github, render_human, render_json, HumanStyle, Outcome};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = jobgraph::SourceFile::new("fuzz.toml", text.to_string());
    let checked = jobgraph::check_source(source);
    if let Some(g) = &checked.graph {
        let plan = jobgraph::plan::Plan::new(g);
        let _ = plan.render();
        let _ = serde_json::to_string(&plan);
        let _ = jobgraph::render::render_dot(g);
        let _ = jobgraph::render::render_mermaid(g);
        let _ = g.only(&["a".to_string()]);
        let _ = g.check_max_parallel(1);
    }
    let outcome = [Outcome::Checked(Box::new(checked))];
    let _ = render_human(&outcome[0], HumanStyle { color: false, width: 100 });
    let _ = render_human(&outcome[0], HumanStyle { color: true, width: 80 });
    let _ = render_json(&outcome);
    let _ = render_github(&outcome);
});
