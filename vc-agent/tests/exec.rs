//! Processes outside any container, with the agent as a normal process: exec,
//! streams, stdin, terminal, exit codes and exec failures.

mod common;

use std::time::{Duration, Instant};

use common::{agent, attach, connect, host_process, read_all};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vc_proto::{ErrorCode, Request, Response, StreamKind};

fn sh(script: &str) -> [&str; 3] {
    ["/bin/sh", "-c", script]
}

#[tokio::test]
async fn stdout_and_stderr_arrive_separately_and_the_code_is_reported() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    let response = client
        .exec(
            "e1",
            &sh("echo out; echo err >&2; printf 'no newline'"),
            false,
        )
        .await;
    assert!(matches!(response, Response::Pid(_)), "{response:?}");
    let out = attach(&agent, host_process("e1"), StreamKind::Stdout)
        .await
        .expect("stdout");
    let err = attach(&agent, host_process("e1"), StreamKind::Stderr)
        .await
        .expect("stderr");
    let (out, err) = tokio::join!(read_all(out), read_all(err));
    assert_eq!(out, b"out\nno newline");
    assert_eq!(err, b"err\n");
    assert_eq!(client.wait("e1").await, 0);
}

#[tokio::test]
async fn exit_codes() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    for (id, script, code) in [
        ("zero", "exit 0", 0),
        ("one", "exit 1", 1),
        ("max", "exit 255", 255),
        ("killed", "kill -9 $$", 137),
        ("termed", "kill -TERM $$", 143),
    ] {
        assert!(matches!(
            client.exec(id, &sh(script), false).await,
            Response::Pid(_)
        ));
        assert_eq!(client.wait(id).await, code, "{script}");
    }
}

#[tokio::test]
async fn signal_reaches_the_process_and_a_late_signal_is_fine() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    assert!(matches!(
        client.exec("s", &["sleep", "30"], false).await,
        Response::Pid(_)
    ));
    let signal = |signal| Request::Signal {
        process: host_process("s"),
        signal,
        all: false,
    };
    assert_eq!(client.call(signal(libc::SIGKILL)).await, Response::Ok);
    assert_eq!(client.wait("s").await, 137);
    assert_eq!(client.call(signal(libc::SIGTERM)).await, Response::Ok);
}

#[tokio::test]
async fn a_missing_program_fails_at_once_naming_it() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    let start = Instant::now();
    let response = client.exec("m", &["/no/such/program-xyz"], false).await;
    let Response::Error(e) = response else {
        panic!("expected an error, got {response:?}");
    };
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(e.code, ErrorCode::ExecFailed);
    assert!(e.message.contains("/no/such/program-xyz"), "{}", e.message);
    assert!(e.message.contains("No such file"), "{}", e.message);
    // Looked up in PATH too.
    let response = client.exec("m2", &["no-such-program-xyz"], false).await;
    assert!(
        matches!(&response, Response::Error(e) if e.code == ErrorCode::ExecFailed && e.message.contains("no-such-program-xyz")),
        "{response:?}"
    );
    // The id of a failed exec can be used again.
    assert!(matches!(
        client.exec("m", &sh("exit 3"), false).await,
        Response::Pid(_)
    ));
    assert_eq!(client.wait("m").await, 3);
}

#[tokio::test]
async fn a_file_that_is_not_executable_fails_naming_it() {
    let (agent, dir) = agent();
    let mut client = connect(&agent).await;
    let path = dir.path().join("plain-file");
    std::fs::write(&path, "data").expect("write");
    let path = path.to_str().expect("utf-8");
    let response = client.exec("n", &[path], false).await;
    assert!(
        matches!(&response, Response::Error(e) if e.code == ErrorCode::ExecFailed && e.message.contains(path)),
        "{response:?}"
    );
}

#[tokio::test]
async fn duplicate_exec_id_is_refused() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    assert!(matches!(
        client.exec("d", &["sleep", "1"], false).await,
        Response::Pid(_)
    ));
    let again = client.exec("d", &["true"], false).await;
    assert!(matches!(again, Response::Error(e) if e.code == ErrorCode::AlreadyExists));
}

#[tokio::test]
async fn stdin_data_and_end_of_file_reach_the_process() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    assert!(matches!(
        client.exec("cat", &["cat"], false).await,
        Response::Pid(_)
    ));
    let mut stdin = attach(&agent, host_process("cat"), StreamKind::Stdin)
        .await
        .expect("stdin");
    let out = attach(&agent, host_process("cat"), StreamKind::Stdout)
        .await
        .expect("stdout");
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let reader = tokio::spawn(read_all(out));
    stdin.write_all(&data).await.expect("stdin written");
    stdin.shutdown().await.expect("end of file");
    let echoed = reader.await.expect("reader");
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "cat echoed other bytes");
    assert_eq!(client.wait("cat").await, 0);
}

#[tokio::test]
async fn close_stdin_without_a_stream() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    assert!(matches!(
        client.exec("wc", &["wc", "-c"], false).await,
        Response::Pid(_)
    ));
    let response = client
        .call(Request::CloseStdin {
            process: host_process("wc"),
        })
        .await;
    assert_eq!(response, Response::Ok);
    let out = attach(&agent, host_process("wc"), StreamKind::Stdout)
        .await
        .expect("stdout");
    assert_eq!(String::from_utf8_lossy(&read_all(out).await).trim(), "0");
    assert_eq!(client.wait("wc").await, 0);
}

#[tokio::test]
async fn output_written_before_attach_waits_in_the_pipe() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    assert!(matches!(
        client.exec("early", &sh("echo early"), false).await,
        Response::Pid(_)
    ));
    assert_eq!(client.wait("early").await, 0);
    let out = attach(&agent, host_process("early"), StreamKind::Stdout)
        .await
        .expect("stdout");
    assert_eq!(read_all(out).await, b"early\n");
    let again = attach(&agent, host_process("early"), StreamKind::Stdout).await;
    assert!(matches!(again, Err(e) if e.code == ErrorCode::WrongState));
}

#[tokio::test]
async fn large_output_is_exact_with_a_slow_reader() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    let size = 32 * 1024 * 1024;
    let script = format!("head -c {size} /dev/urandom | tee /dev/stderr | cksum >&2");
    assert!(matches!(
        client.exec("big", &sh(&script), false).await,
        Response::Pid(_)
    ));
    let mut err = attach(&agent, host_process("big"), StreamKind::Stderr)
        .await
        .expect("stderr");
    // Read slowly at first: the process must wait, nothing may be lost.
    let mut got = Vec::with_capacity(size + 64);
    let mut buf = vec![0u8; 4096];
    for _ in 0..50 {
        let n = err.read(&mut buf).await.expect("read");
        got.extend_from_slice(&buf[..n]);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    err.read_to_end(&mut got).await.expect("rest");
    assert_eq!(client.wait("big").await, 0);
    let (data, sum) = got.split_at(size);
    let sum = String::from_utf8_lossy(sum);
    let expected_len = sum.split_whitespace().nth(1).expect("cksum length");
    assert_eq!(expected_len, size.to_string());
    assert_eq!(data.len(), size);
}

#[tokio::test]
async fn terminal_resize_and_typing() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    let response = client
        .exec("tty", &sh("read line; stty size; echo \"got $line\""), true)
        .await;
    assert!(matches!(response, Response::Pid(_)), "{response:?}");
    let resize = Request::ResizeTerminal {
        process: host_process("tty"),
        rows: 33,
        cols: 77,
    };
    assert_eq!(client.call(resize).await, Response::Ok);
    let mut tty = attach(&agent, host_process("tty"), StreamKind::Tty)
        .await
        .expect("tty");
    tty.write_all(b"hello\n").await.expect("typed");
    let out = String::from_utf8_lossy(&read_all(tty).await).into_owned();
    assert!(out.contains("33 77"), "{out:?}");
    assert!(out.contains("got hello"), "{out:?}");
    assert_eq!(client.wait("tty").await, 0);
    let pipe = attach(&agent, host_process("tty"), StreamKind::Stdout).await;
    assert!(matches!(pipe, Err(e) if e.code == ErrorCode::InvalidArgument));
}

#[tokio::test]
async fn sixteen_concurrent_execs_keep_their_output_apart() {
    let (agent, _dir) = agent();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&agent).await;
            let id = format!("c{i}");
            let script =
                format!("i=0; while [ $i -lt 200 ]; do echo line-{i}-$i; i=$((i+1)); done");
            assert!(matches!(
                client.exec(&id, &sh(&script), false).await,
                Response::Pid(_)
            ));
            let out = attach(&agent, host_process(&id), StreamKind::Stdout)
                .await
                .expect("stdout");
            let text = String::from_utf8(read_all(out).await).expect("utf-8");
            let expected: String = (0..200).map(|n| format!("line-{i}-{n}\n")).collect();
            assert_eq!(text, expected);
            assert_eq!(client.wait(&id).await, 0);
        }));
    }
    for task in tasks {
        task.await.expect("exec task");
    }
}
