//! `read-point FILE...`: opens the point a chain's data files end at (the full first) through
//! the chain index, says what the index holds and how long it took, and reads the whole disk
//! through it, writing it to stdout when stdout is not a terminal (`> disk.raw`, `| sha256sum`).
//! For the benchmarks (`bench/bench.py`, "index") and for looking at a chain by hand; it reads
//! what it is given with the caller's rights and no sandbox.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use vmsnap_guestfs::point::Point;

fn main() -> std::process::ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: read-point FULL.data [INC.data ...]");
        return std::process::ExitCode::from(2);
    }
    let started = Instant::now();
    let files: Result<Vec<(File, u64)>, _> = paths
        .iter()
        .map(|p| File::open(p).and_then(|f| Ok((f.metadata()?.len(), f)).map(|(n, f)| (f, n))))
        .collect();
    let point = match files
        .map_err(|e| e.to_string())
        .and_then(|f| Point::open(f).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("read-point: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let indexed = started.elapsed();
    let mut out = std::io::stdout().lock();
    let to_stdout = !std::io::stdout().is_terminal();
    let mut buf = vec![0u8; 4 << 20];
    let mut at = 0u64;
    while at < point.size() {
        let n = buf.len().min((point.size() - at) as usize);
        if let Err(e) = point.read_exact_at(&mut buf[..n], at) {
            eprintln!("read-point: at byte {at}: {e}");
            return std::process::ExitCode::FAILURE;
        }
        if to_stdout && out.write_all(&buf[..n]).is_err() {
            return std::process::ExitCode::FAILURE;
        }
        at += n as u64;
    }
    eprintln!(
        "{{\"checkpoint\": {:?}, \"size\": {}, \"pieces\": {}, \"index_seconds\": {:.6}, \"read_seconds\": {:.3}}}",
        point.checkpoint(),
        point.size(),
        point.pieces(),
        indexed.as_secs_f64(),
        (started.elapsed() - indexed).as_secs_f64()
    );
    std::process::ExitCode::SUCCESS
}
