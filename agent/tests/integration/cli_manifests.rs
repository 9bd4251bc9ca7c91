//! `--manifests` pointed at the wrong thing: a FIFO, a device, a huge file, an
//! empty directory. Each ends promptly with a clear message; none hangs,
//! exhausts memory or passes as "No findings".

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use meshdrift::inventory::files::MAX_MANIFEST_BYTES;

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec: {containers: [{name: c, image: i}]}\nstatus: {podIP: 10.1.0.1}\n";

fn tempdir(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("meshdrift-manifests-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

/// A file of `len` bytes that takes no disk space.
fn sparse(path: &Path, len: u64) {
    fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// Runs meshdrift with 4 GiB of address space at most, killed after 20 s: a
/// loader that blocks or reads without end fails the test instead of the machine.
fn meshdrift(args: &[&str]) -> Output {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4194304; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_meshdrift"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("meshdrift {args:?} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn manifests_must_be_a_directory_or_a_regular_file() {
    let dir = tempdir("special");
    let fifo = dir.join("pipe.yaml");
    mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap();
    let explain = |path: &str| {
        vec![
            "explain".to_owned(),
            "--manifests".to_owned(),
            path.to_owned(),
            "--from".to_owned(),
            "default/p".to_owned(),
            "--to".to_owned(),
            "x".to_owned(),
        ]
    };
    let check = |path: &str| {
        vec![
            "check".to_owned(),
            "--manifests".to_owned(),
            path.to_owned(),
        ]
    };
    // (arguments, what the path is)
    let table = [
        (check(fifo), fifo, "a FIFO"),
        (explain(fifo), fifo, "a FIFO"),
        (check("/dev/zero"), "/dev/zero", "a character device"),
        (explain("/dev/zero"), "/dev/zero", "a character device"),
    ];
    for (args, path, kind) in table {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = meshdrift(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            text(&out.stderr),
            format!("error: manifests must be a directory or a regular file; {path} is {kind}\n"),
            "{args:?}"
        );
    }
}

#[test]
fn special_and_oversized_files_in_a_directory_are_problems_naming_them() {
    let dir = tempdir("entries");
    fs::write(dir.join("pod.yaml"), POD).unwrap();
    mkfifo(&dir.join("pipe.yaml"));
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.yaml")).unwrap();
    sparse(&dir.join("huge.yaml"), MAX_MANIFEST_BYTES + 1);
    let out = meshdrift(&[
        "check",
        "--manifests",
        dir.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["objects"], 1, "the regular file still loads");
    let mut problems: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "MD0001")
        .map(|f| {
            let file = f["resource"].as_str().unwrap();
            let name = Path::new(file).file_name().unwrap().to_string_lossy();
            (name.into_owned(), f["message"].as_str().unwrap().to_owned())
        })
        .collect();
    problems.sort();
    let limit = format!(
        "{} bytes, larger than the 64 MiB limit for one manifest file",
        MAX_MANIFEST_BYTES + 1
    );
    assert_eq!(
        problems,
        vec![
            ("huge.yaml".to_owned(), limit),
            (
                "pipe.yaml".to_owned(),
                "not a regular file (a FIFO); skipped".to_owned()
            ),
            (
                "zero.yaml".to_owned(),
                "not a regular file (a character device); skipped".to_owned()
            ),
        ]
    );
}

#[test]
fn one_oversized_file_is_named_with_the_limit() {
    let dir = tempdir("huge");
    let huge = dir.join("huge.yaml");
    sparse(&huge, 2 * MAX_MANIFEST_BYTES);
    let out = meshdrift(&["check", "--manifests", huge.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{}: {} bytes, larger than the 64 MiB limit for one manifest file",
            huge.display(),
            2 * MAX_MANIFEST_BYTES
        )),
        "{stdout}"
    );
}

#[test]
fn nothing_to_check_is_an_error_not_a_pass() {
    // (files to write, what the message says)
    let table: [(&[(&str, &str)], &str); 3] = [
        (&[], "no manifest files"),
        (&[("notes.txt", "kind: Pod\n")], "no manifest files"),
        (
            &[(
                "deploy.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
            )],
            "1 manifest files hold no Pod",
        ),
    ];
    for (i, (files, says)) in table.into_iter().enumerate() {
        let dir = tempdir(&format!("empty-{i}"));
        for (name, body) in files {
            fs::write(dir.join(name), body).unwrap();
        }
        let out = meshdrift(&["check", "--manifests", dir.to_str().unwrap()]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{files:?}: {stdout}");
        assert!(stdout.contains("error [MD0003]"), "{files:?}: {stdout}");
        assert!(stdout.contains(says), "{files:?}: {stdout}");
        assert!(!stdout.contains("No findings"), "{files:?}: {stdout}");
    }
}

/// No message in an error's chain repeats the message of its cause.
fn assert_cause_once(err: &(dyn std::error::Error + 'static)) {
    let mut current = err;
    while let Some(cause) = current.source() {
        assert!(
            !current.to_string().contains(&cause.to_string()),
            "{current:?} repeats its cause {cause:?}"
        );
        current = cause;
    }
}

#[test]
fn errors_print_their_cause_once() {
    let missing = "/nonexistent/meshdrift/manifests";
    for command in ["check", "explain"] {
        let mut args = vec![command, "--manifests", missing];
        if command == "explain" {
            args.extend(["--from", "default/p", "--to", "x"]);
        }
        let out = meshdrift(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert_eq!(
            stderr,
            format!(
                "error: cannot read manifests at {missing}: No such file or directory (os error 2)\n"
            ),
            "{command}"
        );
    }
    let load = meshdrift::inventory::files::load_dir(Path::new(missing)).unwrap_err();
    assert_cause_once(&load);
    let connect = meshdrift::inventory::kube::KubeSourceError::Connect(
        kube::Error::LinesCodecMaxLineLengthExceeded,
    );
    assert_cause_once(&connect);
}
