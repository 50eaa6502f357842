//! The client against the fake libvirtd: the stream cut at every byte in both directions, a
//! hung peer, an unknown procedure, replies that do not decode or answer another call, callers
//! that give up half way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fake::{unknown_procedure, Answer, Fake, Seen};
use super::*;

/// A bound for every test, so a hang is a failure and never a stuck suite; nothing is
/// asserted about how long anything took.
const BOUND: Duration = Duration::from_secs(20);

fn state_reply() -> Vec<u8> {
    Encoder::new().i32(1).i32(1).finish()
}

fn state_of_everyone(header: &Header, _: &[u8]) -> Answer {
    match header.procedure {
        212 => Answer::Ok(state_reply()),
        n => unknown_procedure(n),
    }
}

fn fast() -> Options {
    Options {
        call_timeout: Duration::from_secs(10),
        dead_peer: Duration::from_secs(10),
    }
}

async fn connect(fake: Fake, options: Options) -> (Result<Client, RpcError>, Arc<Mutex<Seen>>) {
    let (stream, seen) = fake.spawn();
    let client = tokio::time::timeout(BOUND, Client::over(stream, "qemu:///system", options))
        .await
        .expect("the handshake hung");
    (client, seen)
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f).await.expect("a call hung")
}

#[tokio::test]
async fn the_handshake_negotiates_keepalive_and_pings_are_answered() {
    let mut fake = Fake::new(state_of_everyone);
    fake.pings = 3;
    let (client, seen) = connect(fake, fast()).await;
    let client = client.unwrap();
    assert!(client.has_keepalive());
    let reply = bounded(client.call(Procedure::DomainGetState, vec![])).await;
    assert_eq!(reply.unwrap(), state_reply());
    // The pongs were queued before the call that followed the pings.
    assert_eq!(seen.lock().unwrap().pongs, 3);
    assert_eq!(seen.lock().unwrap().calls, vec![66, 60, 1, 212]);
}

#[tokio::test]
async fn a_libvirt_without_keepalive_is_still_usable() {
    let mut fake = Fake::new(state_of_everyone);
    fake.keepalive = None;
    let (client, _) = connect(fake, fast()).await;
    let client = client.unwrap();
    assert!(!client.has_keepalive());
    assert!(bounded(client.call(Procedure::DomainGetState, vec![]))
        .await
        .is_ok());
}

/// Every byte the fake sends for the handshake and one call.
fn reply_bytes() -> usize {
    let (auth, feature, open, state) = (4 + 4, 4, 0, 8);
    [auth, feature, open, state]
        .iter()
        .map(|body| 4 + wire::HEADER_LEN + body)
        .sum()
}

#[tokio::test]
async fn replies_cut_at_every_byte_fail_the_call_and_never_hang() {
    let total = reply_bytes();
    for cut in 0..=total {
        let mut fake = Fake::new(state_of_everyone);
        fake.write_budget = cut;
        let (client, _) = connect(fake, fast()).await;
        let outcome = match client {
            Ok(c) => bounded(c.call(Procedure::DomainGetState, vec![])).await,
            Err(e) => Err(e),
        };
        match (cut == total, outcome) {
            (true, Ok(body)) => assert_eq!(body, state_reply()),
            (false, Err(e)) => assert!(e.is_connection_lost(), "cut at {cut}: {e:?}"),
            (_, other) => panic!("cut at {cut} of {total}: {other:?}"),
        }
    }
}

/// Every byte the client writes for the handshake (auth list, feature, open with its name)
/// and then calls with bodies of the given sizes.
fn request_bytes(calls: &[usize]) -> usize {
    let name = "qemu:///system".len().div_ceil(4) * 4;
    [0, 4, 4 + 4 + name + 4]
        .iter()
        .chain(calls)
        .map(|body| 4 + wire::HEADER_LEN + body)
        .sum()
}

#[tokio::test]
async fn requests_cut_at_every_byte_fail_the_call_and_never_hang() {
    let requests = request_bytes(&[8]);
    for cut in 0..=requests {
        let mut fake = Fake::new(state_of_everyone);
        fake.read_budget = cut;
        let (client, _) = connect(fake, fast()).await;
        let outcome = match client {
            Ok(c) => bounded(c.call(Procedure::DomainGetState, vec![0; 8])).await,
            Err(e) => Err(e),
        };
        match (cut == requests, outcome) {
            (true, Ok(_)) => {}
            (false, Err(e)) => assert!(e.is_connection_lost(), "cut at {cut}: {e:?}"),
            (_, other) => panic!("cut at {cut} of {requests}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_peer_that_goes_silent_is_taken_for_dead() {
    let fake = Fake::new(|_, _| Answer::Never);
    let options = Options {
        call_timeout: Duration::from_secs(600),
        dead_peer: Duration::from_millis(300),
    };
    let (client, _) = connect(fake, options).await;
    let client = client.unwrap();
    let e = bounded(client.call(Procedure::DomainGetState, vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(e, RpcError::Connection(ref why) if why.contains("keepalive")),
        "{e:?}"
    );
    assert!(client.is_closed());
}

#[tokio::test]
async fn a_hung_peer_is_dropped_after_a_timeout_but_a_slow_call_is_not() {
    // An old libvirt (no keepalive) that never answers: the timeout closes the connection.
    let mut fake = Fake::new(|_, _| Answer::Never);
    fake.keepalive = None;
    let options = Options {
        call_timeout: Duration::from_millis(300),
        dead_peer: Duration::from_secs(600),
    };
    let (client, _) = connect(fake, options).await;
    let client = client.unwrap();
    let e = bounded(client.call(Procedure::DomainGetState, vec![]))
        .await
        .unwrap_err();
    assert!(matches!(e, RpcError::Timeout { .. }), "{e:?}");
    assert!(client.is_closed());

    // One slow call while others are answered: only that call fails.
    let mut fake = Fake::new(|h, _| match h.procedure {
        14 => Answer::Never,
        _ => Answer::Ok(state_reply()),
    });
    fake.keepalive = None;
    let (client, _) = connect(fake, options).await;
    let client = client.unwrap();
    let slow = client.call(Procedure::DomainGetXmlDesc, vec![]);
    let lively = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.call(Procedure::DomainGetState, vec![]).await
    };
    let (slow, lively) = bounded(async { tokio::join!(slow, lively) }).await;
    assert!(matches!(slow, Err(RpcError::Timeout { .. })), "{slow:?}");
    assert!(lively.is_ok());
    assert!(!client.is_closed());
}

#[tokio::test]
async fn an_unknown_procedure_is_typed_and_the_connection_stays() {
    let (client, _) = connect(Fake::new(state_of_everyone), fast()).await;
    let client = client.unwrap();
    let e = bounded(client.call(Procedure::DomainGetJobStats, vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            RpcError::Unsupported {
                procedure: "DOMAIN_GET_JOB_STATS",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_connection_lost());
    assert!(bounded(client.call(Procedure::DomainGetState, vec![]))
        .await
        .is_ok());
}

#[tokio::test]
async fn an_undecodable_reply_fails_its_call_only() {
    let (client, _) = connect(
        Fake::new(|h, _| match h.procedure {
            // An error whose body is not a remote_error.
            14 => Answer::Raw(fake::reply(h, STATUS_ERROR, &[0, 0, 0])),
            // A stream status on a plain call.
            23 => Answer::Raw(fake::reply(h, 2, &[])),
            _ => Answer::Ok(state_reply()),
        }),
        fast(),
    )
    .await;
    let client = client.unwrap();
    for p in [Procedure::DomainGetXmlDesc, Procedure::DomainLookupByName] {
        let e = bounded(client.call(p, vec![])).await.unwrap_err();
        assert!(matches!(e, RpcError::Decode { .. }), "{e:?}");
    }
    assert!(bounded(client.call(Procedure::DomainGetState, vec![]))
        .await
        .is_ok());
}

#[tokio::test]
async fn a_reply_for_another_procedure_drops_the_connection() {
    let (client, _) = connect(
        Fake::new(|h, _| {
            let mut other = Header { ..*h };
            other.procedure = 14;
            Answer::Raw(fake::reply(&other, STATUS_OK, &[]))
        }),
        fast(),
    )
    .await;
    let client = client.unwrap();
    let e = bounded(client.call(Procedure::DomainGetState, vec![]))
        .await
        .unwrap_err();
    assert!(matches!(e, RpcError::Protocol(_)), "{e:?}");
    assert!(client.is_closed());
}

#[tokio::test]
async fn a_change_cut_off_from_its_reply_is_not_called_a_connection_error() {
    let mut fake = Fake::new(|_, _| Answer::Never);
    // The fake reads the handshake and both calls, then hangs up without an answer.
    fake.read_budget = request_bytes(&[64, 64]);
    let (stream, _) = fake.spawn();
    let client = Client::over(stream, "qemu:///system", fast())
        .await
        .unwrap();
    // The fake closes while both wait: the read may be tried again, the change may not.
    let (read, change) = bounded(async {
        tokio::join!(
            client.call(Procedure::DomainGetState, vec![0; 64]),
            client.call(Procedure::DomainCheckpointDelete, vec![0; 64])
        )
    })
    .await;
    let (read, change) = (read.unwrap_err(), change.unwrap_err());
    assert!(read.is_retryable(), "{read:?}");
    assert!(
        matches!(
            change,
            RpcError::Interrupted {
                procedure: "DOMAIN_CHECKPOINT_DELETE"
            }
        ),
        "{change:?}"
    );
    assert!(!change.is_retryable());
}

#[tokio::test]
async fn callers_that_give_up_never_leave_half_a_frame() {
    let (client, seen) = connect(Fake::new(state_of_everyone), fast()).await;
    let client = Arc::new(client.unwrap());
    // Large requests, most of them abandoned as soon as they started.
    for round in 0..20 {
        let c = client.clone();
        let call =
            tokio::spawn(async move { c.call(Procedure::DomainGetState, vec![7; 1 << 20]).await });
        if round % 4 != 0 {
            tokio::task::yield_now().await;
            call.abort();
        } else {
            bounded(call).await.unwrap().unwrap();
        }
    }
    let last = bounded(client.call(Procedure::DomainGetState, vec![])).await;
    assert!(last.is_ok(), "{last:?}");
    assert_eq!(seen.lock().unwrap().garbage, None);
    assert!(!client.is_closed());
}
