//! `[enter] network = "private"`: the web example served from a jail through a published port,
//! egress on and off, and the host's abstract unix sockets out of reach.
//!
//! Real root, the real binary, pasta from Debian's `passt`; a missing tool fails naming its
//! package. Each test picks free host ports, so the example's 8080 is never assumed free.
#![allow(clippy::disallowed_methods)] // tests build fixtures with plain fs calls

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[macro_use]
mod cli;
use cli::{build_static, prerequisites, Workspace};

/// A TCP port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("local address").port()
}

/// Fetches `url` with curl, retrying while the service starts (at most ~10 s).
fn fetch(url: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let output = Command::new("curl").args(["-s", "--max-time", "2", url]).output().expect("run curl");
        if output.status.success() {
            return Some(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Pids of the pasta processes whose command line names `needle`.
fn pastas_naming(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("pasta") && cmdline.contains(needle) {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

fn sigterm_and_wait(child: &mut Child) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM jailprov");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait for jailprov") {
            return status;
        }
        assert!(Instant::now() < deadline, "jailprov did not end within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_web_example_serves_a_page_on_its_published_port_and_stops_cleanly() {
    need_root!("the_web_example_serves_a_page_on_its_published_port_and_stops_cleanly");
    for tool in [&prerequisites::PASTA, &prerequisites::CURL, &prerequisites::NGINX] {
        prerequisites::require(tool);
    }
    let work = Workspace::new("jailprov-network-");
    let port = free_port();
    let example = fs::read_to_string("examples/web/Jailfile.toml").expect("read the web example");
    assert!(example.contains("127.0.0.1:8080:80/tcp"), "the example publishes 8080");
    work.write_jailfile(&example.replace("127.0.0.1:8080:80/tcp", &format!("127.0.0.1:{port}:80/tcp")));
    work.apply();
    // nginx imports getaddrinfo (a run-time need for resolver files), yet behind pasta the
    // host's /etc/hosts and resolv.conf mean nothing: the jail's are jailprov's own.
    let hosts = fs::read_to_string(work.at("/etc/hosts")).expect("the jail has /etc/hosts");
    assert!(hosts.starts_with("# written by jailprov"), "the host's /etc/hosts was copied:\n{hosts}");
    let resolv = fs::read_to_string(work.at("/etc/resolv.conf")).expect("the jail has /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.0.2.3"), "{resolv}");
    let mut enter = work.command("enter", &[]);
    let mut jail = enter.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start jailprov enter");

    let page = fetch(&format!("http://127.0.0.1:{port}/"));
    let running_pastas = pastas_naming(&format!("127.0.0.1/{port}:80"));
    let status = sigterm_and_wait(&mut jail);
    let mut stdout = String::new();
    let mut stderr = String::new();
    jail.stdout.take().expect("piped").read_to_string(&mut stdout).expect("read stdout");
    jail.stderr.take().expect("piped").read_to_string(&mut stderr).expect("read stderr");
    let page = page.unwrap_or_else(|| panic!("no page from 127.0.0.1:{port}; jailprov said:\n{stdout}\n{stderr}"));
    assert!(page.contains("served from a jail"), "{page}");
    assert_eq!(running_pastas.len(), 1, "one pasta publishes the port while the jail runs");
    // nginx's access_log /dev/stdout reached jailprov's caller, as the unprivileged jail user.
    assert!(stdout.contains("\"GET / HTTP/1.1\" 200"), "access log on stdout:\n{stdout}\n{stderr}");
    // SIGTERM: passed on to nginx, which exits; then jailprov ends, with pasta.
    assert!(stderr.contains("exit"), "nginx was told to stop:\n{stderr}");
    assert!(status.code().is_some(), "jailprov exited rather than being killed: {status}");
    assert!(pastas_naming(&format!("127.0.0.1/{port}:80")).is_empty(), "pasta outlived the jail");
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok(), "port {port} is free again");
}

/// The address the host reaches the outside world from (not loopback): where a listener the
/// jail may or may not reach is bound.
fn host_address() -> std::net::IpAddr {
    let probe = UdpSocket::bind("0.0.0.0:0").expect("bind a UDP socket");
    probe.connect("192.0.2.200:9").or_else(|_| probe.connect("203.0.113.1:9")).expect("this host has no route out");
    probe.local_addr().expect("local address").ip()
}

fn bash_jail(work: &Workspace, egress: bool) {
    work.write_jailfile(&format!(
        "root = \"/unused\"\nbinaries = [\"bash\", \"cat\"]\n[enter]\nnetwork = \"private\"\negress = {egress}\n"
    ));
    work.apply();
}

#[test]
fn egress_on_reaches_a_host_listener_and_egress_off_does_not() {
    need_root!("egress_on_reaches_a_host_listener_and_egress_off_does_not");
    prerequisites::require(&prerequisites::PASTA);
    let address = host_address();
    let listener = TcpListener::bind((address, 0)).expect("listen on the host's address");
    let port = listener.local_addr().expect("local address").port();
    let accepting = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.write_all(b"from the host\n").expect("write");
    });
    let script = format!("exec 3<>/dev/tcp/{address}/{port} && cat <&3");

    let open = Workspace::new("jailprov-network-");
    bash_jail(&open, true);
    let reached = open.enter(&["/usr/bin/bash", "-c", &script]);
    assert!(reached.stdout.contains("from the host"), "egress on: {}", reached.describe());
    accepting.join().expect("the listener thread");

    let closed = Workspace::new("jailprov-network-");
    bash_jail(&closed, false);
    let refused = closed.enter(&["/usr/bin/bash", "-c", &script]);
    assert_ne!(refused.code, 0, "egress off: {}", refused.describe());
    assert!(refused.stderr.contains("Network is unreachable"), "egress off: {}", refused.describe());
    let resolv = fs::read_to_string(closed.at("/etc/resolv.conf")).expect("resolv.conf is written");
    assert!(!resolv.contains("nameserver"), "no resolver without egress: {resolv}");
    let resolv = fs::read_to_string(open.at("/etc/resolv.conf")).expect("resolv.conf is written");
    assert!(resolv.contains("nameserver 10.0.2.3"), "pasta's resolver: {resolv}");
}

const CONNECT_ABSTRACT_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
int main(int argc, char **argv) {
    if (argc < 2) return 64;
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    size_t length = strlen(argv[1]);
    memcpy(address.sun_path + 1, argv[1], length);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&address, sizeof(sa_family_t) + 1 + length) != 0) { perror("connect"); return 1; }
    puts("connected");
    return 0;
}
"#;

#[test]
fn the_hosts_abstract_unix_sockets_stay_unreachable() {
    need_root!("the_hosts_abstract_unix_sockets_stay_unreachable");
    prerequisites::require(&prerequisites::PASTA);
    use std::os::linux::net::SocketAddrExt;
    let work = Workspace::new("jailprov-network-");
    let program = build_static(&work.dir, "connect-abstract", CONNECT_ABSTRACT_C);
    let name = format!("jailprov-test-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("an abstract name");
    let _listener = std::os::unix::net::UnixListener::bind_addr(&address).expect("bind the abstract socket");
    // The program reaches the host's socket from the host: the test can fail.
    let host = Command::new(&program).arg(&name).output().expect("run on the host");
    assert!(String::from_utf8_lossy(&host.stdout).contains("connected"), "the probe works on the host");
    work.write_jailfile(&format!(
        "root = \"/unused\"\n[[files]]\nsrc = \"{}\"\ndest = \"/probe\"\nmode = \"0755\"\n[enter]\nnetwork = \"private\"\n",
        program.display()
    ));
    work.apply();
    let inside = work.enter(&["/probe", &name]);
    assert_eq!(inside.code, 1, "{}", inside.describe());
    assert!(inside.stderr.contains("Connection refused"), "{}", inside.describe());
}

#[test]
fn bad_ports_name_the_key_and_the_value() {
    let work = Workspace::new("jailprov-network-");
    work.write_jailfile(
        "root = \"/unused\"\n[enter]\nnetwork = \"private\"\nports = [\"127.0.0.1:8080:0/tcp\", \"8080:80/sctp\"]\n",
    );
    let validate = || {
        cli::output({
            let mut command = Command::new(cli::BIN);
            command.arg("validate").arg("-f").arg(&work.jailfile).stdin(Stdio::null());
            command
        })
    };
    let run = validate();
    assert_ne!(run.code, 0, "{}", run.describe());
    assert!(run.stderr.contains("enter.ports[0]") && run.stderr.contains("1 to 65535"), "{}", run.describe());
    assert!(run.stderr.contains("enter.ports[1]") && run.stderr.contains("sctp"), "{}", run.describe());

    work.write_jailfile("root = \"/unused\"\n[enter]\nports = [\"8080:80\"]\negress = false\n");
    let run = validate();
    assert!(run.stderr.contains("only with [enter] network = \"private\""), "{}", run.describe());
    assert!(run.stderr.contains("enter.egress"), "{}", run.describe());
}
