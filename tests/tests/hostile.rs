//! Hostile and malformed calls, made the way a rogue or buggy client would: straight onto the
//! bus, without vmsnapctl's checks. Every one is refused with a typed error that names the
//! problem, nothing reaches the host, and the service goes on serving.

use std::collections::HashMap;
use std::path::Path;

use vmsnap_dbus::names::{BUS_NAME, ERROR_PREFIX, MANAGER_INTERFACE, MANAGER_PATH};
use vmsnap_integration::bus::connect;
use vmsnap_integration::host;
use zvariant::Value;

/// The methods that take `(as domains, a{sv} options)`, with options that are otherwise valid.
fn methods(root: &str) -> Vec<(&'static str, HashMap<&'static str, Value<'static>>)> {
    let with_root = |extra: &[(&'static str, Value<'static>)]| {
        let mut o: HashMap<&'static str, Value<'static>> = HashMap::new();
        o.insert("output", Value::from(root.to_string()));
        for (k, v) in extra {
            o.insert(k, v.clone());
        }
        o
    };
    vec![
        ("Status", with_root(&[])),
        ("Backup", with_root(&[])),
        ("Scrub", {
            let mut o = HashMap::new();
            o.insert("type", Value::from("both"));
            o
        }),
        ("Prune", with_root(&[])),
        ("ListBackups", with_root(&[])),
        ("Verify", with_root(&[])),
    ]
}

/// Calls `method` and returns the error's name and message; a success fails the test.
async fn refused(
    conn: &zbus::Connection,
    method: &str,
    body: &(impl serde::Serialize + zvariant::DynamicType),
) -> (String, String) {
    match conn
        .call_method(
            Some(BUS_NAME),
            MANAGER_PATH,
            Some(MANAGER_INTERFACE),
            method,
            body,
        )
        .await
    {
        Ok(_) => panic!("{method} accepted a hostile call"),
        Err(zbus::Error::MethodError(name, message, _)) => {
            (name.to_string(), message.unwrap_or_default())
        }
        Err(other) => panic!("{method}: not a D-Bus error reply: {other}"),
    }
}

fn invalid_argument() -> String {
    format!("{ERROR_PREFIX}.InvalidArgument")
}

/// The service still answers, with the same process.
async fn assert_still_serving(conn: &zbus::Connection) {
    let reply = conn
        .call_method(
            Some(BUS_NAME),
            MANAGER_PATH,
            Some(MANAGER_INTERFACE),
            "Status",
            &(vec!["*"], HashMap::<&str, Value>::new()),
        )
        .await;
    match reply {
        Ok(_) => {}
        // No domains at all is an answer too.
        Err(zbus::Error::MethodError(name, _, _)) if name.ends_with("NoSuchDomain") => {}
        Err(e) => panic!("the service no longer answers Status: {e}"),
    }
}

fn assert_untouched(root: &Path) {
    let entries: Vec<_> = std::fs::read_dir(root).unwrap().collect();
    assert!(entries.is_empty(), "something was written under {root:?}");
}

fn root(name: &str) -> std::path::PathBuf {
    let dir = host().images.join(format!("hostile-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn malformed_domain_lists_are_invalid_arguments_naming_the_problem() {
    let conn = connect(&host().bus_address).await;
    let root = root("names");
    let long = "x".repeat(10_000);
    let many: Vec<String> = (0..2000).map(|i| format!("vm{i}")).collect();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![long], "longer than"),
        (vec!["vm\u{1}one".into()], "control character"),
        (vec!["line\nbreak".into()], "control character"),
        (vec!["../../etc".into()], "/"),
        (vec!["a/b".into()], "/"),
        (vec!["..".into()], ".."),
        (vec![String::new()], "empty"),
        (many, "at most"),
    ];
    for (method, options) in methods(root.to_str().unwrap()) {
        for (domains, says) in &cases {
            let (name, message) = refused(&conn, method, &(domains, &options)).await;
            assert_eq!(
                name,
                invalid_argument(),
                "{method} {domains:.80?}: {message}"
            );
            assert!(
                message.contains(says),
                "{method}: the message should say {says:?}: {message}"
            );
            assert!(message.len() < 1024, "{method}: an unbounded message");
        }
        let (name, message) = refused(&conn, "Restore", &(&"a/b", &options)).await;
        assert_eq!(name, invalid_argument(), "Restore: {message}");
    }
    assert_untouched(&root);
    assert_still_serving(&conn).await;
}

#[tokio::test]
async fn malformed_options_are_invalid_arguments_naming_the_key() {
    let conn = connect(&host().bus_address).await;
    let root = root("options");
    let domains = vec!["vmsnaptest-no-such-domain"];
    for (method, valid) in methods(root.to_str().unwrap()) {
        let variants: Vec<(&str, Value)> = vec![
            ("bogus", Value::from(1u32)),
            ("output", Value::from(5u32)),
            ("output", Value::from("relative/dir")),
            ("output", Value::from(format!("/{}", "d".repeat(10_000)))),
            ("output", Value::from("/var/tmp/\u{7}bell")),
            ("group_by", Value::from("fortnightly")),
            ("dry_run", Value::from("yes")),
            ("keep", Value::from("three")),
        ];
        for (key, value) in variants {
            let mut options = valid.clone();
            options.insert(key, value.clone());
            let (name, message) = refused(&conn, method, &(&domains, &options)).await;
            // A key a method does not take is refused as unknown, whatever its value.
            assert_eq!(
                name,
                invalid_argument(),
                "{method} {key}={value:.80}: {message}"
            );
            assert!(
                message.contains(key),
                "{method}: the message should name {key}: {message}"
            );
        }
        let mut options = valid.clone();
        let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        for k in &keys {
            options.insert(k.as_str(), Value::from(true));
        }
        let (name, _) = refused(&conn, method, &(&domains, &options)).await;
        assert_eq!(name, invalid_argument(), "{method} with 100 options");
    }
    // Destructive operations never read an empty list as "all domains".
    for method in ["Scrub", "Prune"] {
        let options = methods(root.to_str().unwrap())
            .into_iter()
            .find(|(m, _)| *m == method)
            .unwrap()
            .1;
        let (name, message) = refused(&conn, method, &(Vec::<String>::new(), &options)).await;
        assert_eq!(name, invalid_argument(), "{method} []: {message}");
        assert!(message.contains("\"*\""), "{message}");
    }
    assert_untouched(&root);
    assert_still_serving(&conn).await;
}

#[tokio::test]
async fn wrong_signatures_are_refused_before_the_method_runs() {
    let conn = connect(&host().bus_address).await;
    for method in [
        "Status",
        "Backup",
        "Scrub",
        "Prune",
        "ListBackups",
        "Verify",
        "Restore",
    ] {
        for (name, message) in [
            refused(&conn, method, &(42u32, "junk")).await,
            refused(&conn, method, &()).await,
        ] {
            // zbus answers these before the method runs, under its own error name.
            assert_eq!(name, "org.freedesktop.zbus.Error", "{method}: {message}");
            assert!(
                message.contains("Signature mismatch"),
                "{method}: {message}"
            );
        }
    }
    assert_still_serving(&conn).await;
}

#[tokio::test]
async fn shell_metacharacters_and_junk_are_names_never_commands() {
    let conn = connect(&host().bus_address).await;
    let root = root("junk");
    let witness = host().run_dir.join("hostile-witness");
    let w = witness.display();
    let metachar = [
        format!("$(touch {w})"),
        format!("`touch {w}`"),
        format!("vm; touch {w}"),
        format!("vm | touch {w} &"),
        format!("'\"; touch {w}; echo \""),
        "--help".to_string(),
        "-c qemu:///session".to_string(),
    ];
    // Junk without NUL (D-Bus strings cannot hold one): a fixed-seed generator, so a failure
    // repeats.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut junk = Vec::new();
    for _ in 0..200 {
        let len = (seed % 40) as usize + 1;
        let s: String = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from_u32((seed % 0x3000) as u32 + 1).unwrap_or('?')
            })
            .collect();
        junk.push(s);
    }
    for (method, options) in methods(root.to_str().unwrap()) {
        for name in metachar.iter().chain(&junk) {
            let (error, message) = refused(&conn, method, &(vec![name], &options)).await;
            assert!(
                error == invalid_argument() || error.ends_with(".NoSuchDomain"),
                "{method} {name:?}: {error}: {message}"
            );
        }
    }
    assert!(!witness.exists(), "a shell ran a caller's text");
    assert_untouched(&root);
    assert_still_serving(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_status_calls_of_32_mb_each_leave_the_service_small() {
    let bus = vmsnap_integration::bus::ScratchBus::start("ho-bigmsg");
    let service = bus.start_service_args(&[]);
    let conn = connect(&bus.address).await;
    let nothing = HashMap::<&str, Value>::new;
    // The service has answered once before it is measured: its idle size.
    let warm = refused(&conn, "Status", &(vec!["ho-no-such"], nothing())).await;
    assert!(warm.0.ends_with("NoSuchDomain"), "{warm:?}");
    let idle = service.rss_kib();
    // 4 000 000 one-letter names: a body of 32 000 000 bytes, under the bus's 32 MiB limit.
    let names: Vec<&str> = vec!["a"; 4_000_000];
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(connect(&bus.address).await);
    }
    // Half of them carry the names as the domains, half as one option's value.
    let as_domains = (&names, nothing());
    let as_option = (
        vec!["ho-no-such"],
        HashMap::from([("output", Value::from(&names))]),
    );
    let (as_domains, as_option) = (&as_domains, &as_option);
    let calls = clients.iter().enumerate().map(|(i, c)| async move {
        match i % 2 {
            0 => refused(c, "Status", as_domains).await,
            _ => refused(c, "Status", as_option).await,
        }
    });
    // dbus-daemon may refuse some itself when the service's incoming queue is full; those
    // that reach the service are refused by it, naming the count or the option.
    let mut reached = 0;
    for (name, message) in futures_util::future::join_all(calls).await {
        if name == "org.freedesktop.DBus.Error.LimitsExceeded" {
            continue;
        }
        assert_eq!(name, invalid_argument(), "{message}");
        assert!(
            message.contains("4000000 domains given")
                || message.contains("\"output\" has a value of type as"),
            "{message}"
        );
        reached += 1;
    }
    assert!(
        reached >= 2,
        "only {reached} of the 8 calls reached the service"
    );
    let peak = service.peak_kib();
    // Given back within seconds (polled; the bound is on memory, not on time).
    let start = std::time::Instant::now();
    let mut rss = service.rss_kib();
    while rss > idle + 16 * 1024 && start.elapsed() < std::time::Duration::from_secs(30) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        rss = service.rss_kib();
    }
    eprintln!(
        "vmsnapd: {reached} calls of 32 MB: idle {idle} KiB, peak {peak} KiB, after {rss} KiB"
    );
    assert!(peak < 160 * 1024, "peak {peak} KiB");
    assert!(rss <= idle + 16 * 1024, "idle {idle} KiB, after {rss} KiB");
    assert_still_serving(&conn).await;
}
