//! Backup health for a fleet: vmsnapd's textfile scraped by Debian's real node_exporter, the
//! same facts over D-Bus, and the shipped alert rules checked and unit-tested by promtool.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmsnap_integration::bus::{connect, ScratchBus};
use vmsnap_integration::chain::root;
use vmsnap_integration::guest::Guest;
use vmsnap_integration::{host, repo, run, vmsnapctl_on};

#[test]
fn the_shipped_rules_pass_promtool_and_their_unit_tests() {
    let rules = repo().join("prometheus");
    for args in [
        &["check", "rules", "vmsnap.rules.yml"][..],
        &["test", "rules", "vmsnap.rules.test.yml"],
    ] {
        let out = run(
            Command::new("promtool").args(args).current_dir(&rules),
            Duration::from_secs(60),
        );
        assert_eq!(
            out.code, 0,
            "promtool {args:?}:\n{}{}",
            out.stdout, out.stderr
        );
    }
}

/// Debian's node_exporter with only the textfile collector, on a free local port.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start(dir: &std::path::Path) -> NodeExporter {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter is not installed (tests/run installs it)");
        let exporter = NodeExporter { child, port };
        let start = Instant::now();
        while exporter.try_scrape().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "node_exporter did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        exporter
    }

    fn try_scrape(&self) -> Option<String> {
        scrape_port(self.port)
    }

    fn scrape(&self) -> String {
        self.try_scrape().expect("node_exporter answers /metrics")
    }
}

/// `GET /metrics` from the local port, as Prometheus scrapes it.
fn scrape_port(port: u16) -> Option<String> {
    {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200").then(|| body.to_string())
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample `series` (name and labels, as written) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `series` has a value that satisfies `want` (the service writes after a job
/// ends, on its own task).
fn eventually(exporter: &NodeExporter, series: &str, want: impl Fn(f64) -> bool) -> String {
    let start = Instant::now();
    loop {
        let scrape = exporter.scrape();
        if sample(&scrape, series).is_some_and(&want) {
            return scrape;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{series} never as expected:\n{scrape}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn node_exporter_shows_backup_health_and_every_scrape_parses() {
    let metrics = host().images.join("metrics-textfile");
    let state = host().images.join("metrics-state");
    std::fs::create_dir_all(&metrics).unwrap();
    let (m, s) = (metrics.to_str().unwrap(), state.to_str().unwrap());
    let bus = ScratchBus::start("metrics");
    let service = bus.start_service_args(&["--state-dir", s, "--metrics-dir", m]);
    let exporter = NodeExporter::start(&metrics);
    // Written at start already: the service's version, no domain yet.
    let info = format!("vmsnap_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    let first = eventually(&exporter, &info, |v| v == 1.0);
    assert_eq!(
        sample(&first, "node_textfile_scrape_error"),
        Some(0.0),
        "{first}"
    );

    let good = Guest::qcow2("mx-good", 32);
    let broken = Guest::qcow2("mx-broken", 16);
    let root = root("metrics");
    good.write("vda", 0x71, 0, 4);
    good.start();
    // Shut off, its disk gone: libvirt cannot start it paused, the backup job fails.
    std::fs::remove_file(broken.image("vda")).unwrap();
    let ctl = |args: &[&str]| vmsnapctl_on(&bus.address, args);

    // Scrapes all along while jobs end and the file is replaced.
    let scraping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let scraper = {
        let (scraping, port) = (scraping.clone(), exporter.port);
        std::thread::spawn(move || {
            let mut scrapes = Vec::new();
            while scraping.load(std::sync::atomic::Ordering::Relaxed) {
                scrapes.push(scrape_port(port).expect("node_exporter answers /metrics"));
                std::thread::sleep(Duration::from_millis(10));
            }
            scrapes
        })
    };
    ctl(&["backup", &good.name, "--output", &root]).expect_code(0);
    good.destroy();
    good.write("vda", 0x72, 8, 2);
    good.start();
    ctl(&["backup", &good.name, "--output", &root]).expect_code(0);
    ctl(&["verify", &good.name, "--output", &root]).expect_code(0);
    ctl(&["backup", &broken.name, "--output", &root]).expect_code(10);
    let name = |metric: &str, g: &Guest| format!("{metric}{{domain=\"{}\"}}", g.name);
    let scrape = eventually(
        &exporter,
        &name("vmsnap_backup_last_attempt_success", &broken),
        |v| v == 0.0,
    );
    scraping.store(false, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.join().unwrap();
    assert!(scrapes.len() > 10, "only {} scrapes", scrapes.len());
    for s in &scrapes {
        assert_eq!(sample(s, "node_textfile_scrape_error"), Some(0.0), "{s}");
        assert!(
            s.contains("vmsnap_info{"),
            "a scrape without VMSnap's metrics:\n{s}"
        );
    }

    // The facts, as node_exporter serves them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let value = |metric: &str, g: &Guest| {
        sample(&scrape, &name(metric, g)).unwrap_or_else(|| panic!("no {metric}:\n{scrape}"))
    };
    let success = value("vmsnap_backup_last_success_timestamp_seconds", &good);
    assert!(success > now - 600.0 && success <= now, "{scrape}");
    assert_eq!(value("vmsnap_backup_last_attempt_success", &good), 1.0);
    // The incremental copied the 2 MiB written since the full.
    assert!(
        value("vmsnap_backup_last_bytes", &good) >= 2.0 * 1024.0 * 1024.0,
        "{scrape}"
    );
    assert_eq!(value("vmsnap_chain_points", &good), 2.0, "{scrape}");
    assert!(value("vmsnap_chain_size_bytes", &good) >= 4.0 * 1024.0 * 1024.0);
    assert_eq!(value("vmsnap_verify_last_success", &good), 1.0);
    assert_eq!(value("vmsnap_domain_status_ok", &good), 1.0);
    assert_eq!(
        value("vmsnap_backup_last_success_timestamp_seconds", &broken),
        0.0
    );
    assert_eq!(value("vmsnap_backup_last_attempt_success", &broken), 0.0);
    assert_eq!(
        sample(&scrape, "vmsnap_backup_max_age_seconds"),
        Some(93600.0)
    );

    // promtool lints what node_exporter served.
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let vmsnap_only: String = scrape
        .lines()
        .filter(|l| l.contains("vmsnap_"))
        .map(|l| format!("{l}\n"))
        .collect();
    lint.stdin
        .take()
        .unwrap()
        .write_all(vmsnap_only.as_bytes())
        .unwrap();
    let linted = lint.wait_with_output().unwrap();
    assert!(
        linted.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );

    // The same facts over D-Bus, and after a restart (kept in the state directory).
    drop(service);
    let _restarted = bus.start_service_args(&["--state-dir", s, "--metrics-dir", m]);
    let manager = vmsnap_dbus::ManagerProxy::new(&connect(&bus.address).await)
        .await
        .unwrap();
    let health = manager
        .backup_health(&[&good.name, &broken.name])
        .await
        .unwrap();
    assert_eq!(health.len(), 2, "{health:?}");
    let g = health.iter().find(|h| h.domain == good.name).unwrap();
    assert_eq!(g.last_success, Some(success as u64));
    assert_eq!(
        (g.last_attempt_ok, g.last_verify_ok),
        (Some(true), Some(true))
    );
    assert_eq!(g.chain_points, Some(2));
    let b = health.iter().find(|h| h.domain == broken.name).unwrap();
    assert_eq!((b.last_attempt_ok, b.last_success), (Some(false), None));
    let after = eventually(
        &exporter,
        &name("vmsnap_backup_last_success_timestamp_seconds", &good),
        |v| v == success,
    );
    assert_eq!(sample(&after, "node_textfile_scrape_error"), Some(0.0));
    good.destroy();
}
