//! The service as a bus citizen: its published contract, its properties, and what clients see
//! when it or its host tools are missing.

use std::os::unix::fs::symlink;

use vmsnap_dbus::names::{BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH};
use vmsnap_dbus::MANAGER_INTROSPECTION_XML;
use vmsnap_integration::bus::{connect as connection, ScratchBus};
use vmsnap_integration::{host, repo, tool, vmsnapctl_on, which};

fn manager_interface(xml: &str) -> &str {
    let start = xml
        .find(&format!("<interface name=\"{MANAGER_INTERFACE}\">"))
        .unwrap_or_else(|| panic!("no {MANAGER_INTERFACE} in:\n{xml}"));
    let end = start
        + xml[start..]
            .find("</interface>")
            .expect("interface is closed");
    &xml[start..end + "</interface>".len()]
}

#[tokio::test]
async fn introspection_matches_the_checked_in_xml() {
    let conn = connection(&host().bus_address).await;
    let proxy = zbus::fdo::IntrospectableProxy::builder(&conn)
        .destination(BUS_NAME)
        .unwrap()
        .path(MANAGER_PATH)
        .unwrap()
        .build()
        .await
        .unwrap();
    let live = proxy.introspect().await.expect("Introspect answers");
    let live = manager_interface(&live);
    let shipped = manager_interface(MANAGER_INTROSPECTION_XML);
    if live != shipped && std::env::var_os("VMSNAP_UPDATE_GOLDEN").is_some() {
        let path = repo().join("dbus/interfaces/org.vmsnap.VMSnap1.Manager.xml");
        let file = MANAGER_INTROSPECTION_XML.replace(shipped, live);
        std::fs::write(&path, file).unwrap();
        panic!("updated {}; review and commit it", path.display());
    }
    assert_eq!(
        live, shipped,
        "the running service's interface differs from dbus/interfaces/…Manager.xml \
         (rerun with VMSNAP_UPDATE_GOLDEN=1 to update it after an intended change)"
    );
}

#[test]
fn busctl_shows_the_manager_interface() {
    let out = tool(
        "busctl",
        &[
            &format!("--address={}", host().bus_address),
            "introspect",
            BUS_NAME,
            MANAGER_PATH,
        ],
    );
    assert!(out.contains("org.vmsnap.VMSnap1.Manager"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(".Status") && l.contains("asa{sv}") && l.contains("aa{sv}")),
        "{out}"
    );
}

#[tokio::test]
async fn properties_describe_the_service_and_its_tools() {
    let conn = connection(&host().bus_address).await;
    let manager = vmsnap_dbus::ManagerProxy::new(&conn).await.unwrap();
    assert_eq!(manager.version().await.unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(manager.libvirt_uri().await.unwrap(), "qemu:///system");
    // tests/run starts the service with `--backup-root $VMSNAP_TEST_IMAGES/roots`.
    assert_eq!(
        manager.backup_roots().await.unwrap(),
        [host().images.join("roots").display().to_string()]
    );
    let installed = tool("virtnbdbackup", &["-V"]);
    assert_eq!(
        manager.virtnbdbackup_version().await.unwrap(),
        normalize(installed.trim()),
        "the service detects the installed virtnbdbackup"
    );
}

fn normalize(version: &str) -> String {
    let parts: Vec<&str> = version.split('.').collect();
    match parts.len() {
        2 => format!("{version}.0"),
        _ => version.to_string(),
    }
}

#[tokio::test]
async fn typed_errors_reach_a_plain_dbus_client() {
    let conn = connection(&host().bus_address).await;
    let manager = vmsnap_dbus::ManagerProxy::new(&conn).await.unwrap();
    match manager
        .status(&["vmsnap-no-such-domain-x"], Default::default())
        .await
    {
        Err(vmsnap_dbus::Error::NoSuchDomain(m)) => assert!(m.contains("vmsnap-no-such-domain-x")),
        other => panic!("expected NoSuchDomain, got {other:?}"),
    }
    // A dictionary as an untyped client may send it.
    let mut bad = std::collections::HashMap::new();
    bad.insert("output", zvariant::Value::from(7u32));
    let reply: Result<Vec<vmsnap_dbus::DomainStatus>, vmsnap_dbus::Error> = manager
        .inner()
        .call("Status", &(Vec::<&str>::new(), bad))
        .await
        .map_err(Into::into);
    match reply {
        Err(vmsnap_dbus::Error::InvalidArgument(m)) => assert!(m.contains("output"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    // The error name on the wire, as busctl (any language) sees it.
    let out = vmsnap_integration::run(
        std::process::Command::new("busctl").args([
            &format!("--address={}", host().bus_address),
            "call",
            BUS_NAME,
            MANAGER_PATH,
            MANAGER_INTERFACE,
            "Status",
            "asa{sv}",
            "1",
            "vmsnap-no-such-domain-y",
            "0",
        ]),
        std::time::Duration::from_secs(60),
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("vmsnap-no-such-domain-y"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_missing_service_is_reported_not_waited_for() {
    let bus = ScratchBus::start("no-service");
    let run = vmsnapctl_on(&bus.address, &["status", "--json"]).expect_code(9);
    assert!(
        run.stderr.contains("vmsnapd is not running"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
    let run = vmsnapctl_on("unix:path=/nonexistent/vmsnap-bus", &["status"]).expect_code(9);
    assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);
}

#[test]
fn missing_host_programs_are_named_once() {
    // A PATH holding virsh but neither qemu-img nor virtnbdbackup.
    let dir = host().run_dir.join("path-without-qemu-img");
    std::fs::create_dir_all(&dir).unwrap();
    let _ = symlink(which("virsh").expect("virsh"), dir.join("virsh"));
    let bus = ScratchBus::start("missing-deps");
    let _service = bus.start_service(&[("PATH", dir.to_str().unwrap())]);
    let run = vmsnapctl_on(&bus.address, &["status"]).expect_code(4);
    assert!(run.stderr.contains("MissingDependency"), "{}", run.stderr);
    assert!(run.stderr.contains("qemu-img"), "{}", run.stderr);
    assert_eq!(run.stderr.matches("qemu-img").count(), 1, "{}", run.stderr);
}

#[test]
fn only_root_may_own_the_name() {
    let bus = ScratchBus::start("ownership");
    let run = vmsnap_integration::run(
        std::process::Command::new("runuser")
            .args(["-u", "vmsnaptest", "--", "env"])
            .arg(format!("DBUS_SYSTEM_BUS_ADDRESS={}", bus.address))
            .arg(host().bin_dir.join("vmsnapd"))
            .arg("--log-to-stderr"),
        std::time::Duration::from_secs(60),
    );
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("bus policy"), "{}", run.stderr);
}
