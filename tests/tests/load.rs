//! Load and misbehaving clients: many callers at once during backups, racing cancels, and
//! clients that vanish while the service works for them. Nothing may hang, leak or block.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmsnap_dbus::names::{BUS_NAME, JOB_INTERFACE, MANAGER_INTERFACE, MANAGER_PATH};
use vmsnap_integration::bus::{connect, ScratchBus};
use vmsnap_integration::chain::{
    assert_restores_to, backup_under_way, job_entry, libvirt_job, root, snapshot, wait_job,
};
use vmsnap_integration::guest::Guest;
use vmsnap_integration::{host, vmsnapctl_on};
use zvariant::Value;

async fn status(conn: &zbus::Connection, domains: &[&str]) -> zbus::Result<()> {
    conn.call_method(
        Some(BUS_NAME),
        MANAGER_PATH,
        Some(MANAGER_INTERFACE),
        "Status",
        &(domains, HashMap::<&str, Value>::new()),
    )
    .await
    .map(|_| ())
}

fn job_state(bus: &str, job: &str) -> String {
    job_entry(bus, job)["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Waits until `done` holds, at most a minute (a liveness bound, not a timing assertion).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `clients` connections calling Status `calls` times each, all at once; every call must
/// answer successfully.
async fn status_storm(address: &str, domains: &[&str], clients: usize, calls: usize) {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let address = address.to_string();
        let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
        tasks.push(tokio::spawn(async move {
            let conn = connect(&address).await;
            let names: Vec<&str> = domains.iter().map(String::as_str).collect();
            for i in 0..calls {
                if let Err(e) = status(&conn, &names).await {
                    panic!("Status call {i} failed: {e}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("a client task failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_clients_calling_status_during_two_backups_all_answer_and_memory_returns() {
    let guests = [
        Guest::qcow2("ld-storm-a", 1024),
        Guest::qcow2("ld-storm-b", 1024),
    ];
    for g in &guests {
        g.write("vda", 0x5a, 0, 900);
    }
    let root = root("ld-storm");
    let bus = ScratchBus::start("ld-storm");
    let service = bus.start_service_args(&[]);
    let names: Vec<&str> = guests.iter().map(|g| g.name.as_str()).collect();
    // Warm up (first connections, thread pools, caches), then take the baseline.
    status_storm(&bus.address, &names, 20, 3).await;
    let before = service.rss_kib();
    let jobs: Vec<String> = guests
        .iter()
        .map(|g| backup_under_way(&bus.address, g, &root))
        .collect();
    // One round while both backups copy: Status does not wait for them.
    status_storm(&bus.address, &names, 20, 1).await;
    for job in &jobs {
        assert_eq!(
            job_state(&bus.address, job),
            "running",
            "Status answered only after a backup ended"
        );
    }
    status_storm(&bus.address, &names, 20, 49).await;
    for job in &jobs {
        assert_eq!(wait_job(&bus.address, job)["state"], "succeeded");
    }
    let after = service.rss_kib();
    eprintln!(
        "vmsnapd RSS: {before} KiB before, {after} KiB after 1000 Status calls and 2 backups"
    );
    assert!(
        after < before + 6 * 1024,
        "memory grew from {before} KiB to {after} KiB"
    );
}

#[tokio::test]
async fn two_clients_cancelling_the_same_job_at_once_both_get_an_answer() {
    let g = Guest::qcow2("ld-cancel", 1024);
    g.write("vda", 0x11, 0, 900);
    let now = snapshot(&g, "vda", "now");
    let root = root("ld-cancel");
    let bus = ScratchBus::start("ld-cancel");
    let _service = bus.start_service_args(&[]);
    let job = backup_under_way(&bus.address, &g, &root);
    let cancel = |address: String, job: String| async move {
        let conn = connect(&address).await;
        conn.call_method(
            Some(BUS_NAME),
            job.as_str(),
            Some(JOB_INTERFACE),
            "Cancel",
            &(),
        )
        .await
        .map(|_| ())
    };
    let (a, b) = tokio::join!(
        cancel(bus.address.clone(), job.clone()),
        cancel(bus.address.clone(), job.clone())
    );
    // Exactly one is taken; the other learns that the job is already being cancelled.
    let refused: Vec<String> = [a, b]
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("AlreadyCancelled"), "{refused:?}");
    assert_eq!(wait_job(&bus.address, &job)["state"], "cancelled");
    assert_eq!(libvirt_job(&g), None);
    // The domain is free again and its next backup is good.
    let r = vmsnapctl_on(
        &bus.address,
        &["backup", &g.name, "--output", &root, "--json"],
    )
    .expect_code(0);
    let folder = r.json()["domains"][0]["folder"]
        .as_str()
        .unwrap()
        .to_string();
    assert_restores_to(&folder, None, "vda.qcow2", &now);
}

#[test]
fn a_watching_client_that_disappears_leaves_its_job_to_finish() {
    let g = Guest::qcow2("ld-watcher", 1024);
    g.write("vda", 0x22, 0, 900);
    let now = snapshot(&g, "vda", "now");
    let root = root("ld-watcher");
    let bus = ScratchBus::start("ld-watcher");
    let _service = bus.start_service_args(&[]);
    // vmsnapctl follows the job's progress signals until it is killed.
    let mut watcher = Command::new(host().bin_dir.join("vmsnapctl"))
        .args(["backup", &g.name, "--output", &root])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let job = loop {
        let jobs = vmsnapctl_on(&bus.address, &["jobs", "--json"])
            .expect_code(0)
            .json();
        if let Some(j) = jobs.as_array().unwrap().first() {
            break j["job"].as_str().unwrap().to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no job appeared");
        std::thread::sleep(Duration::from_millis(50));
    };
    watcher.kill().unwrap();
    watcher.wait().unwrap();
    let entry = wait_job(&bus.address, &job);
    assert_eq!(entry["state"], "succeeded", "{entry}");
    assert_restores_to(
        entry["results"][0]["folder"].as_str().unwrap(),
        None,
        "vda.qcow2",
        &now,
    );
}

/// A polkit authority that never decides: every check waits, as one waiting on a person's
/// password does. It records the cancellations it receives.
struct SilentAuthority {
    cancelled: Arc<Mutex<Vec<String>>>,
    asked: Arc<Mutex<Vec<String>>>,
}

#[zbus::interface(name = "org.freedesktop.PolicyKit1.Authority")]
impl SilentAuthority {
    async fn check_authorization(
        &self,
        _subject: (String, HashMap<String, zvariant::OwnedValue>),
        _action_id: String,
        _details: HashMap<String, String>,
        _flags: u32,
        cancellation_id: String,
    ) -> (bool, bool, HashMap<String, String>) {
        self.asked.lock().unwrap().push(cancellation_id);
        std::future::pending().await
    }

    async fn cancel_check_authorization(&self, cancellation_id: String) {
        self.cancelled.lock().unwrap().push(cancellation_id);
    }
}

type Recorded = Arc<Mutex<Vec<String>>>;

/// A scratch bus whose polkit authority is a [`SilentAuthority`]: the bus, the authority's
/// connection (keep it), and the checks it was asked and told to cancel.
async fn bus_with_silent_authority(
    name: &str,
) -> (ScratchBus, zbus::Connection, Recorded, Recorded) {
    let bus = ScratchBus::start_with(
        name,
        r#"<policy user="root"><allow own="org.freedesktop.PolicyKit1"/></policy>"#,
    );
    let cancelled = Recorded::default();
    let asked = Recorded::default();
    let authority = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .serve_at(
            "/org/freedesktop/PolicyKit1/Authority",
            SilentAuthority {
                cancelled: cancelled.clone(),
                asked: asked.clone(),
            },
        )
        .unwrap()
        .name("org.freedesktop.PolicyKit1")
        .unwrap()
        .build()
        .await
        .expect("the stand-in authority could not take its name");
    (bus, authority, asked, cancelled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_during_authorization_is_let_go() {
    let g = Guest::qcow2("ld-authleave", 32);
    let root = root("ld-authleave");
    let (bus, _authority, asked, cancelled) = bus_with_silent_authority("ld-authleave").await;
    let _service = bus.start_service_args(&[]);
    // A client allows interactive authorization for a backup, then is gone mid-wait.
    let mut client = Command::new("busctl")
        .arg(format!("--address={}", bus.address))
        .args([
            "call",
            "--allow-interactive-authorization=yes",
            "--timeout=600",
            BUS_NAME,
            MANAGER_PATH,
            MANAGER_INTERFACE,
            "Backup",
            "asa{sv}",
            "1",
            &g.name,
            "1",
            "output",
            "s",
            &root,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until("the service asked the authority", || {
        !asked.lock().unwrap().is_empty()
    })
    .await;
    // While that check waits, other calls are served.
    let conn = connect(&bus.address).await;
    status(&conn, &[&g.name]).await.expect("Status was blocked");
    client.kill().unwrap();
    client.wait().unwrap();
    // The service lets go: polkit is told to drop the dialog for exactly that check.
    let id = asked.lock().unwrap()[0].clone();
    assert!(
        !id.is_empty(),
        "an interactive check needs a cancellation id"
    );
    until("the check was cancelled", || {
        cancelled.lock().unwrap().contains(&id)
    })
    .await;
    // No job was made and nothing locked: the domain's folder does not exist.
    let jobs = vmsnapctl_on(&bus.address, &["jobs", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(jobs, serde_json::json!([]));
    assert!(std::fs::read_dir(&root).unwrap().next().is_none());
    status(&conn, &[&g.name])
        .await
        .expect("the service stopped answering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_that_never_end_hold_no_read_slot_and_roots_reads_keep_their_lane() {
    let g = Guest::qcow2("ld-slots", 32);
    // A root-only backup root: reading it needs org.vmsnap.read from anyone else.
    let root = root("ld-slots");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let (bus, _authority, asked, _) = bus_with_silent_authority("ld-slots").await;
    let _service = bus.start_service_args(&[]);
    // A user with no rights fills its whole share with reads whose checks never answer (as
    // an agent of its own that never answers would).
    let mut waiting: Vec<_> = (0..4)
        .map(|_| {
            Command::new("runuser")
                .args(["-u", "vmsnaptest", "--", "busctl"])
                .arg(format!("--address={}", bus.address))
                .args([
                    "call",
                    "--allow-interactive-authorization=yes",
                    "--timeout=600",
                    BUS_NAME,
                    MANAGER_PATH,
                    MANAGER_INTERFACE,
                    "Status",
                    "asa{sv}",
                    "1",
                    &g.name,
                    "1",
                    "output",
                    "s",
                    &root,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    until("all four checks are waiting", || {
        asked.lock().unwrap().len() == 4
    })
    .await;
    // Root's read of the same folder answers, and so does another user's plain Status.
    let conn = connect(&bus.address).await;
    let options = HashMap::from([("output", Value::from(root.as_str()))]);
    let body = (vec![g.name.as_str()], options);
    let call = conn.call_method(
        Some(BUS_NAME),
        MANAGER_PATH,
        Some(MANAGER_INTERFACE),
        "Status",
        &body,
    );
    tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("root's Status waited behind checks that never end")
        .expect("root's Status failed");
    let plain = vmsnap_integration::vmsnapctl_as_on("vmsnaplv", &bus.address, &["status", &g.name]);
    plain.expect_code(0);
    for mut w in waiting.drain(..) {
        let _ = w.kill();
        let _ = w.wait();
    }
}
