//! The Manager and Job interfaces over a zbus peer-to-peer connection, without a bus daemon,
//! libvirtd or polkitd, so `cargo test` alone catches contract drift (after zbus's own p2p
//! tests). The engine is the real one, configured but never connected: every call here is
//! answered before the engine reaches the host — by option checking, by authorization (polkit
//! cannot be asked over a p2p connection, and the caller is not root, so every change is
//! refused) or by a job's own state. The root integration suite covers the rest.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vmsnap_dbus::names::{MANAGER_INTERFACE, MANAGER_PATH};
use vmsnap_dbus::options::{
    BackupOptions, PruneOptions, RestoreOptions, ScrubOptions, StatusOptions, VerifyOptions,
};
use vmsnap_dbus::{Error, Interaction, JobProxy, ManagerProxy};
use zbus::connection::Builder;
use zbus::Connection;
use zvariant::Value;

use super::authority::Authority;
use super::manager::Manager;
use crate::engine::jobs::{JobState, Operation};
use crate::engine::{Config, Engine};
use crate::selection::DomainName;

/// A service and a client joined by a socket pair; the state directory goes on drop.
struct Peer {
    engine: Arc<Engine>,
    server: Connection,
    client: Connection,
    state: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

async fn peer(name: &str) -> Peer {
    peer_keeping(name, Duration::from_secs(60)).await
}

/// A peer whose finished jobs stay on the bus for `retention`.
async fn peer_keeping(name: &str, retention: Duration) -> Peer {
    let state = std::env::temp_dir().join(format!("vmsnap-p2p-{name}-{}", std::process::id()));
    let engine = Arc::new(Engine::new(Config {
        state_dir: state.clone(),
        scratch_dir: state.join("scratch"),
        backup_roots: vec![state.join("roots")],
        ..Config::default()
    }));
    let manager = Manager::new(engine.clone(), retention);
    let (a, b) = tokio::net::UnixStream::pair().expect("a socket pair");
    let guid = zbus::Guid::generate();
    let server = Builder::unix_stream(a)
        .server(guid)
        .unwrap()
        .p2p()
        .serve_at(MANAGER_PATH, manager)
        .unwrap()
        .serve_at(MANAGER_PATH, zbus::fdo::ObjectManager)
        .unwrap()
        .build();
    let client = Builder::unix_stream(b).p2p().build();
    let (server, client) = tokio::try_join!(server, client).expect("the p2p handshake");
    Peer {
        engine,
        server,
        client,
        state,
    }
}

impl Peer {
    async fn manager(&self) -> ManagerProxy<'static> {
        ManagerProxy::new(&self.client).await.unwrap()
    }

    /// A job of this caller (over p2p a caller has no uid: the service sees `u32::MAX`),
    /// exported as the Manager would.
    async fn job(&self, domain: &str) -> (Arc<crate::engine::jobs::Job>, JobProxy<'static>) {
        let job = self
            .engine
            .jobs()
            .create(
                Operation::Verify,
                vec![DomainName::new(domain).unwrap()],
                u32::MAX,
            )
            .unwrap();
        let exported = super::job::export(
            &self.server,
            job.clone(),
            Arc::new(Authority::default()),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let proxy = JobProxy::builder(&self.client)
            .path(exported.path)
            .unwrap()
            .build()
            .await
            .unwrap();
        (job, proxy)
    }

    async fn introspect(&self, path: &str) -> String {
        zbus::fdo::IntrospectableProxy::builder(&self.client)
            .destination(vmsnap_dbus::names::BUS_NAME)
            .unwrap()
            .path(path.to_string())
            .unwrap()
            .build()
            .await
            .unwrap()
            .introspect()
            .await
            .unwrap()
    }
}

fn interface<'a>(xml: &'a str, name: &str) -> &'a str {
    let start = xml
        .find(&format!("<interface name=\"{name}\">"))
        .unwrap_or_else(|| panic!("no {name} in:\n{xml}"));
    let end = start + xml[start..].find("</interface>").expect("closed");
    &xml[start..end]
}

/// A Status call with a dictionary as any client could send it, typed or not.
async fn raw_status(manager: &ManagerProxy<'_>, pairs: &[(&str, Value<'_>)]) -> Result<(), Error> {
    let options: HashMap<&str, Value<'_>> = pairs.iter().cloned().collect();
    let _: Vec<vmsnap_dbus::DomainStatus> = manager
        .inner()
        .call("Status", &(vec!["vm1"], options))
        .await?;
    Ok(())
}

fn access_denied(e: &Error) -> bool {
    matches!(e, Error::ZBus(zbus::Error::MethodError(name, _, _))
        if name.as_str() == "org.freedesktop.DBus.Error.AccessDenied")
}

#[tokio::test]
async fn the_interfaces_match_the_checked_in_xml() {
    let p = peer("xml").await;
    let live = p.introspect(MANAGER_PATH).await;
    if std::env::var_os("VMSNAP_WRITE_XML").is_some() {
        std::fs::write("/tmp/live-manager.xml", &live).unwrap();
    }
    assert_eq!(
        interface(&live, MANAGER_INTERFACE),
        interface(vmsnap_dbus::MANAGER_INTROSPECTION_XML, MANAGER_INTERFACE),
        "dbus/interfaces/…Manager.xml differs from the Manager the service serves"
    );
    let (_job, proxy) = p.job("vm1").await;
    let live = p.introspect(proxy.inner().path().as_str()).await;
    let job = vmsnap_dbus::names::JOB_INTERFACE;
    assert_eq!(
        interface(&live, job),
        interface(vmsnap_dbus::JOB_INTROSPECTION_XML, job),
        "dbus/interfaces/…Job.xml differs from the Job the service serves"
    );
    let session = std::sync::Arc::new(crate::engine::files::Session::detached(
        7,
        0,
        crate::selection::DomainName::new("vm1").unwrap(),
    ));
    let shelf = std::sync::Arc::new(super::shelf::JobShelf::new(
        Default::default(),
        std::time::Duration::from_secs(60),
    ));
    let path = super::files::export(
        &p.server,
        p.engine.clone(),
        Default::default(),
        shelf,
        session,
    )
    .await
    .unwrap();
    let live = p.introspect(path.as_str()).await;
    let files = vmsnap_dbus::names::FILES_INTERFACE;
    if std::env::var_os("VMSNAP_WRITE_XML").is_some() {
        std::fs::write("/tmp/live-files.xml", &live).unwrap();
    }
    assert_eq!(
        interface(&live, files),
        interface(vmsnap_dbus::FILES_INTROSPECTION_XML, files),
        "dbus/interfaces/…Files.xml differs from the Files the service serves"
    );
}

#[tokio::test]
async fn bad_options_are_typed_errors_naming_the_key() {
    let p = peer("options").await;
    let manager = p.manager().await;
    for (pairs, key) in [
        (vec![("bogus", Value::from(true))], "bogus"),
        (vec![("group_by", Value::from(7u32))], "group_by"),
        (vec![("output", Value::from("relative/dir"))], "output"),
    ] {
        match raw_status(&manager, &pairs).await {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains(key), "{key}: {message}")
            }
            other => panic!("{key}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn every_change_is_refused_before_any_work_when_the_caller_is_not_allowed() {
    let p = peer("refused").await;
    let manager = p.manager().await;
    let output = Some(p.state.join("roots").display().to_string());
    let backup = BackupOptions {
        output: output.clone(),
        ..Default::default()
    };
    let verify = VerifyOptions {
        output: output.clone(),
        ..Default::default()
    };
    let scrub = ScrubOptions {
        scrub_type: Some("both".into()),
        ..Default::default()
    };
    let prune = PruneOptions {
        output: output.clone(),
        ..Default::default()
    };
    let restore = RestoreOptions {
        output,
        target: Some("/nonexistent/target".into()),
        ..Default::default()
    };
    let deep = StatusOptions {
        deep: Some(true),
        ..Default::default()
    };
    let ask = Interaction::Denied;
    let refusals = [
        manager.backup(&["vm1"], backup.to_dict()).await.map(|_| ()),
        manager.verify(&["vm1"], verify.to_dict()).await.map(|_| ()),
        manager.scrub(&["vm1"], scrub.to_dict()).await.map(|_| ()),
        manager.prune(&["vm1"], prune.to_dict()).await.map(|_| ()),
        manager.restore("vm1", restore.to_dict()).await.map(|_| ()),
        // The deep check taints guests: it needs the backup right, asked first.
        manager.status(&["vm1"], deep.to_dict()).await.map(|_| ()),
        // The same calls as the CLI makes them, with the interaction flag per call.
        manager.backup_as(ask, &["vm1"], &backup).await.map(|_| ()),
        manager.verify_as(ask, &["vm1"], &verify).await.map(|_| ()),
        manager.scrub_as(ask, &["vm1"], &scrub).await.map(|_| ()),
        manager.prune_as(ask, &["vm1"], &prune).await.map(|_| ()),
        manager.restore_as(ask, "vm1", &restore).await.map(|_| ()),
    ];
    for (i, r) in refusals.into_iter().enumerate() {
        match r {
            Err(e) if access_denied(&e) => {}
            other => panic!("call {i}: {other:?}"),
        }
    }
    assert!(
        p.engine.jobs().unfinished().is_empty(),
        "a refused call made a job"
    );
    assert!(manager.list_jobs().await.unwrap().is_empty());
}

#[tokio::test]
async fn cancel_is_taken_once_and_refused_after_with_typed_errors() {
    let p = peer("cancel").await;
    let (job, proxy) = p.job("vm1").await;
    assert!(proxy.cancelable().await.unwrap());
    proxy.cancel().await.expect("the first Cancel is taken");
    assert!(job.is_cancelled());
    assert!(!proxy.cancelable().await.unwrap());
    match proxy.cancel().await {
        Err(Error::AlreadyCancelled(m)) => assert!(m.contains("already"), "{m}"),
        other => panic!("{other:?}"),
    }
    job.set_state(JobState::Cancelled);
    match proxy.cancel().await {
        Err(Error::NotCancelable(m)) => assert!(m.contains("cancelled"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(proxy.state().await.unwrap(), "cancelled");
}

#[tokio::test]
async fn jobs_are_announced_and_withdrawn_through_object_manager_alone() {
    use futures_util::StreamExt;
    let p = peer_keeping("objects", Duration::from_millis(50)).await;
    let objects = zbus::fdo::ObjectManagerProxy::builder(&p.client)
        .destination(vmsnap_dbus::names::BUS_NAME)
        .unwrap()
        .path(MANAGER_PATH)
        .unwrap()
        .build()
        .await
        .unwrap();
    let mut added = objects.receive_interfaces_added().await.unwrap();
    let mut removed = objects.receive_interfaces_removed().await.unwrap();
    let job = p
        .engine
        .jobs()
        .create(Operation::Backup, vec![DomainName::new("vm1").unwrap()], 0)
        .unwrap();
    let manager = p
        .server
        .object_server()
        .interface::<_, Manager>(MANAGER_PATH)
        .await
        .unwrap();
    manager
        .get()
        .await
        .adopt(&p.server, job.clone())
        .await
        .unwrap();
    let bound = Duration::from_secs(20);
    let signal = tokio::time::timeout(bound, added.next())
        .await
        .unwrap()
        .unwrap();
    let args = signal.args().unwrap();
    let path = args.object_path().to_string();
    assert!(path.ends_with(&format!("/job/{}", job.id)), "{path}");
    assert!(args
        .interfaces_and_properties()
        .keys()
        .any(|i| i.as_str() == vmsnap_dbus::names::JOB_INTERFACE));
    let listed = p.manager().await.list_jobs().await.unwrap();
    let listed: Vec<String> = listed.iter().map(|o| o.to_string()).collect();
    assert_eq!(listed, std::slice::from_ref(&path));

    job.set_state(JobState::Failed);
    let signal = tokio::time::timeout(bound, removed.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(signal.args().unwrap().object_path().to_string(), path);
    // The Manager stops listing it once the object is gone.
    let start = std::time::Instant::now();
    while !p.manager().await.list_jobs().await.unwrap().is_empty() {
        assert!(start.elapsed() < bound, "a removed job is still listed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
