//! Command-line flags that take unusual but valid values.

/// `--grace 0s` is a valid choice; the other durations stay positive.
#[test]
fn run_accepts_a_zero_grace_and_no_other_zero_duration() {
    use clap::Parser;
    use meshdrift::cli::{Cli, Command};
    let parse = |extra: &[&str]| {
        let mut args = vec!["meshdrift", "run", "--manifests", "/nonexistent"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args)
    };
    match parse(&["--grace", "0s"]).map(|cli| cli.command) {
        Ok(Command::Run(run)) => assert_eq!(run.grace, std::time::Duration::ZERO),
        other => panic!("--grace 0s: {other:?}"),
    }
    for flag in ["--window", "--update-interval", "--reload-interval"] {
        let err = parse(&[flag, "0s"]).expect_err(flag);
        assert!(
            err.to_string().contains("must be a positive duration"),
            "{flag}: {err}"
        );
    }
    assert!(parse(&["--grace", "-1s"]).is_err());
}
