//! A stand-in for libvirtd's socket that a test can take away and bring back.
//!
//! Every connection through it is forwarded to the real libvirtd; [`SocketProxy::stop`] closes
//! them all and removes the socket, which is what a client sees when libvirtd restarts. The
//! libvirtd every test shares is never touched.

use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub struct SocketProxy {
    path: PathBuf,
    stopping: Arc<AtomicBool>,
    /// Both ends of every forwarded connection, to close them on `stop`.
    open: Arc<Mutex<Vec<UnixStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl SocketProxy {
    /// Listens on `path` and forwards each connection to `target`.
    pub fn start(path: &Path, target: &Path) -> SocketProxy {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .unwrap_or_else(|e| panic!("cannot listen on {}: {e}", path.display()));
        let stopping = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let (stop, conns, target) = (stopping.clone(), open.clone(), target.to_path_buf());
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let upstream = match UnixStream::connect(&target) {
                    Ok(u) => u,
                    Err(e) => panic!("cannot reach {}: {e}", target.display()),
                };
                forward(&client, &upstream, &conns);
            }
        });
        SocketProxy {
            path: path.to_path_buf(),
            stopping,
            open,
            acceptor: Some(acceptor),
        }
    }

    /// Closes every forwarded connection and the socket.
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the acceptor so that it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.acceptor.take() {
            t.join().expect("the proxy's acceptor panicked");
        }
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.stop();
        }
    }
}

/// Copies both ways on threads of their own; each end is kept for `stop`.
fn forward(client: &UnixStream, upstream: &UnixStream, open: &Mutex<Vec<UnixStream>>) {
    let clone = |s: &UnixStream| s.try_clone().expect("cannot clone a socket");
    open.lock()
        .unwrap()
        .extend([clone(client), clone(upstream)]);
    for (mut from, mut to) in [
        (clone(client), clone(upstream)),
        (clone(upstream), clone(client)),
    ] {
        std::thread::spawn(move || {
            // Ends when either side closes (or `stop` shuts both down); then the other
            // direction is told.
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}
