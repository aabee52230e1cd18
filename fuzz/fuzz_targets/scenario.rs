//! The scenario language's parser (`raftsim::scenario::parse`) on the input as text.
//!
//! Checks, beyond "no panic": a parsed scenario's `cluster` line as the simulator writes it
//! (`cluster_line`) and every command that has a line form (`Command::to_line`, what a shrunk
//! failure is written as) parse back to the same settings and commands.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftengine_fuzz as _;
use raftsim::scenario::{cluster_line, parse, Command};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(scenario) = parse("fuzz.scn", &text) else {
        return;
    };
    let mut written = cluster_line(&scenario.settings);
    written.push('\n');
    let mut commands: Vec<&Command> = Vec::new();
    for step in &scenario.steps {
        if let Some(line) = step.command.to_line() {
            written.push_str(&line);
            written.push('\n');
            commands.push(&step.command);
        }
    }
    let again = parse("fuzz.scn", &written)
        .unwrap_or_else(|e| panic!("the written scenario does not parse: {e}\n{written}"));
    let mut settings = again.settings.clone();
    // cluster_line leaves out the options the randomized runs never change.
    settings.catch_up_rounds = scenario.settings.catch_up_rounds;
    settings.catch_up_stall_ticks = scenario.settings.catch_up_stall_ticks;
    assert_eq!(settings, scenario.settings, "cluster line: {written}");
    let reparsed: Vec<&Command> = again.steps.iter().map(|s| &s.command).collect();
    assert_eq!(reparsed, commands, "commands written as\n{written}");
});
