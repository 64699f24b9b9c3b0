//! The `weft-bench` binary's command line: the subcommands that were
//! `weft bench ...` until 2026-12-03, with their flags. (That it measures is
//! tested where a server runs: the `weft` package's end-to-end test of
//! `weft serve` runs `weft-bench serve` against it.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::{Command, Output};

fn weft_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft-bench"))
        .args(args)
        .output()
        .unwrap()
}

/// The commands listed by `--help`.
fn commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   ")) // wrapped description lines
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn help_lists_the_benchmarks() {
    let out = weft_bench(&["--help"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        commands(&String::from_utf8_lossy(&out.stdout)),
        [
            "ingest",
            "floor",
            "serve",
            "freshness",
            "lookup",
            "embedded",
            "quality",
            "help"
        ]
    );
}

#[test]
fn every_benchmark_keeps_its_flags() {
    for (command, flags) in [
        (
            "ingest",
            "--events --users --partitions --spec --bootstrap --work-dir --apply-only",
        ),
        ("floor", "--listen --from --key --user --one-write"),
        (
            "serve",
            "--weft --key --users --first-user --features --floor --redis --concurrency \
             --connections --rate --phases --timeline-secs --duration-secs --rounds \
             --warmup-secs --load-redis --threads --grpc-client --weft-pid --floor-pid \
             --redis-pid --seed --json --only-partitions --tenant --topic-partitions \
             --forwarder --forwarder-pid",
        ),
        (
            "freshness",
            "--weft --key --bootstrap --topic --tenant --samples --interval-ms --jitter-ms --json",
        ),
        (
            "lookup",
            "--views --version --tenant --users --first-user --requests --features --no-memory \
             --per-feature --work-dir --seed",
        ),
        (
            "embedded",
            "--spec --views --bootstrap --topic-partitions --partitions --tenant --users \
             --requests --work-dir --seed",
        ),
        (
            "quality",
            "--events --users --tenants --seed --held-out --spec --work-dir --out",
        ),
    ] {
        let out = weft_bench(&[command, "--help"]);
        assert!(out.status.success(), "{command}: {out:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in flags.split_whitespace() {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "weft-bench {command} lacks {flag}:\n{help}"
            );
        }
    }
}

/// A bad flag is refused before anything is measured.
#[test]
fn an_unknown_flag_is_refused() {
    let out = weft_bench(&["ingest", "--no-such-flag"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}
