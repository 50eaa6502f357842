//! A point served read-only over NBD on a unix socket, without the kernel's nbd module.
//!
//! The service listens and accepts; every connection is handed to a sandboxed reader of its
//! own (`vmsnap-guestfs nbd`, see [`super::guestfs::serve_nbd`]), which indexes the chain and
//! speaks NBD on the connection. Nothing here parses a byte of the chain or of the client.
//! The socket lives in a private directory of its own (mode 0700, owned by whoever may use
//! it); dropping the [`Export`] stops the listener, kills every reader and removes both.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::task::JoinSet;

use super::guestfs::{serve_nbd, Sandbox};
use super::safe_fs::{Dir, Identity};

/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 8;

pub struct Export {
    parent: PathBuf,
    name: String,
    identity: Identity,
    socket: PathBuf,
    listener: tokio::task::JoinHandle<()>,
}

impl Export {
    /// Serves the point `files` make (one disk's data files, the full first) on a socket in a
    /// new directory under `parent`, both usable by `owner` (uid, gid) and root alone.
    pub fn start(
        parent: &Path,
        prefix: &str,
        program: &Path,
        files: Vec<File>,
        sandbox: Sandbox,
        owner: (u32, u32),
    ) -> std::io::Result<Export> {
        std::fs::create_dir_all(parent)?;
        let dir = Dir::open(parent)?.create_unique_dir(prefix)?;
        dir.set_owner_and_mode(owner.0, owner.1, 0o700)?;
        let socket = dir.path().join("nbd.sock");
        let listener = UnixListener::bind(&socket)?;
        std::os::unix::fs::lchown(&socket, Some(owner.0), Some(owner.1))?;
        let files = Arc::new(files);
        let program = program.to_path_buf();
        let listener = tokio::spawn(accept(listener, program, files, sandbox));
        Ok(Export {
            parent: parent.to_path_buf(),
            name: dir.name().unwrap_or_default().to_string(),
            identity: dir.identity()?,
            socket,
            listener,
        })
    }

    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The export as an NBD URI (`nbd+unix:///?socket=…`), as qemu-img and nbdfuse take it.
    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }
}

async fn accept(listener: UnixListener, program: PathBuf, files: Arc<Vec<File>>, sandbox: Sandbox) {
    // Dropped with this task (the export ended): every connection's reader is killed.
    let mut connections = JoinSet::new();
    loop {
        while connections.len() >= MAX_CONNECTIONS {
            connections.join_next().await;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted.and_then(|(s, _)| s.into_std()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "NBD export: accept failed");
                continue;
            }
        };
        if let Err(e) = stream.set_nonblocking(false) {
            tracing::warn!(error = %e, "NBD export: a connection refused");
            continue;
        }
        let (program, files) = (program.clone(), files.clone());
        connections.spawn(async move {
            let fd = OwnedFd::from(stream);
            match serve_nbd(&program, &files, sandbox, fd).await {
                Ok(status) if !status.success() => {
                    tracing::warn!(%status, "NBD export: a reader ended with an error")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "NBD export: no reader started"),
            }
        });
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        self.listener.abort();
        let removed = Dir::open(&self.parent)
            .and_then(|parent| parent.remove_tree(&self.name, Some(self.identity)));
        if let Err(e) = removed {
            tracing::warn!(export = %self.socket.display(), error = %e, "NBD export not removed");
        }
    }
}
