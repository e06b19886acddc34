//! The command line: zero-config mode (`--listen`/`--upstream`/`--admin`), `--print-config`,
//! and refusing a bad config file.

use std::process::Command;

use remora_tests::{
    Behaviour, Client, Proto, ProxyProcess, TempDir, Upstream, free_addrs, proxy_bin,
};

#[tokio::test]
async fn zero_config_mode_proxies_round_robin_to_every_upstream() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let [listen, admin] = free_addrs(2)[..] else {
        unreachable!()
    };
    let proxy = ProxyProcess::builder()
        .args(["--listen", &listen.to_string()])
        .args(["--upstream", &format!("{},{}", a.addr(), b.addr())])
        .args(["--admin", &admin.to_string()])
        .start();
    assert_eq!(proxy.listener("main"), listen);
    assert_eq!(proxy.admin(), admin);

    let mut client = Client::connect(listen, Proto::Http1).await;
    let mut served_by = Vec::new();
    for _ in 0..4 {
        served_by.push(client.get("/").await.echo().upstream().to_owned());
    }
    assert_eq!(served_by, ["a", "b", "a", "b"]);
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(proxy_bin())
        .args(args)
        .output()
        .expect("run remora-proxy")
}

#[tokio::test]
async fn print_config_prints_a_config_the_proxy_runs_from() {
    let upstream = Upstream::start(Behaviour::Echo);
    let up = upstream.addr().to_string();
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &up,
        "--admin",
        "127.0.0.1:0",
        "--print-config",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains(&up), "{yaml}");

    // Printing it again from the file gives the same text: nothing is lost on the way.
    let dir = TempDir::new("print-config");
    let file = dir.file("printed.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let again = run(&["--config", &file, "--print-config"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap(), yaml);

    // And it serves.
    let proxy = ProxyProcess::start(&yaml);
    let reply = Client::connect(proxy.listener("main"), Proto::Http1)
        .await
        .get("/printed")
        .await;
    assert_eq!(reply.echo().path(), "/printed");
    assert_eq!(upstream.requests(), 1);
}

#[test]
fn a_bad_config_is_refused_with_its_location() {
    let dir = TempDir::new("bad-config");
    let file = dir.file("bad.yaml");
    std::fs::write(
        &file,
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    routes:\n      - cluster: nowhere\n\
         clusters:\n  - name: app\n    endpoints: []\n",
    )
    .unwrap();
    let out = run(&["--config", &file]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // `file:line:col: field.path: message`, pointing at the reference.
    assert!(stderr.contains(&format!("{file}:5:")), "{stderr}");
    assert!(stderr.contains("nowhere"), "{stderr}");
}
