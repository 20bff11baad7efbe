//! docs/flags.md must document every flag of `ringway --help`: its name, its environment
//! variable and its default. Adding a flag without documenting it fails here.

use clap::CommandFactory;
use ringway::config::Config;

#[test]
fn every_flag_is_documented_with_env_and_default() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/flags.md"))
        .expect("docs/flags.md exists");
    let command = Config::command();
    let mut missing = Vec::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let row = doc
            .lines()
            .find(|line| line.starts_with(&format!("| `--{long}`")));
        let Some(row) = row else {
            missing.push(format!("--{long}: no table row"));
            continue;
        };
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy();
            if !row.contains(&format!("`{env}`")) {
                missing.push(format!("--{long}: env {env} not in its row"));
            }
        } else {
            missing.push(format!("--{long}: has no RINGWAY_* environment variable"));
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = defaults.join(",");
        if !row.contains(&format!("`{default}`")) {
            missing.push(format!("--{long}: default `{default}` not in its row"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/flags.md is out of date:\n{}",
        missing.join("\n")
    );
}

/// Prints the flag table in the format docs/flags.md uses:
/// `cargo test --test flags_doc print_flag_table -- --ignored --nocapture`.
#[test]
#[ignore = "a generator for docs/flags.md, not a check"]
fn print_flag_table() {
    for arg in Config::command().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let env = arg
            .get_env()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        println!(
            "| `--{long}` | `{env}` | `{}` | {help} |",
            default.join(",")
        );
    }
}
