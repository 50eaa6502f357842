//! Verify's structural check of one disk's data files, the whole chain in one call.
//!
//! Each file is indexed (every frame read, every extent inside the disk, offsets and lengths
//! consistent, each file continuing the one before it), the chain's points are laid over each
//! other as a read would, and every lz4 frame is decoded to the size its extent claims. What
//! this does not read, the uncompressed payloads, is what the service hashes: together they
//! touch each stored byte once.

use std::fs::File;

use crate::point::Point;
use crate::protocol::ChainCheck;

/// Checks `files` (each with its size), the full first.
pub fn check_chain(files: Vec<(File, u64)>) -> ChainCheck {
    let (point, refused) = Point::open_longest(files);
    let mut failure = refused.map(|e| e.to_string());
    let Some(point) = point else {
        return ChainCheck {
            good: 0,
            failure,
            extents: 0,
            pieces: 0,
        };
    };
    let mut good = point.files();
    if let Err((file, e)) = point.check_frames() {
        good = file;
        failure = Some(format!("data file {file}: {e}"));
    }
    ChainCheck {
        good: good as u32,
        failure,
        extents: point.extents() as u64,
        pieces: point.pieces() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::tests::{temp, write_point, TestExtent};

    fn chain(name: &str, layers: &[Vec<TestExtent>], compress: bool) -> Vec<std::path::PathBuf> {
        layers
            .iter()
            .enumerate()
            .map(|(n, layer)| {
                let path = temp(&format!("{name}-{n}.data"));
                write_point(&path, 1 << 20, layer, compress, n > 0);
                path
            })
            .collect()
    }

    fn opened(paths: &[std::path::PathBuf]) -> Vec<(File, u64)> {
        paths
            .iter()
            .map(|p| {
                let f = File::open(p).unwrap();
                let n = f.metadata().unwrap().len();
                (f, n)
            })
            .collect()
    }

    fn layers() -> Vec<Vec<TestExtent>> {
        vec![
            vec![(0, 65536, Some(vec![7u8; 65536])), (65536, 65536, None)],
            vec![(4096, 8192, Some(vec![9u8; 8192]))],
            vec![(131072, 4096, Some(vec![1u8; 4096]))],
        ]
    }

    #[test]
    fn a_sound_chain_is_good_throughout() {
        for compress in [false, true] {
            let paths = chain(&format!("check-sound-{compress}"), &layers(), compress);
            let found = check_chain(opened(&paths));
            assert_eq!(
                (found.good, found.failure),
                (3, None),
                "compress {compress}"
            );
            assert!(found.extents >= 4);
        }
    }

    #[test]
    fn a_cut_file_fails_from_itself_on() {
        for compress in [false, true] {
            let paths = chain(&format!("check-cut-{compress}"), &layers(), compress);
            let bytes = std::fs::read(&paths[1]).unwrap();
            std::fs::write(&paths[1], &bytes[..bytes.len() - 60]).unwrap();
            let found = check_chain(opened(&paths));
            assert_eq!(found.good, 1, "compress {compress}: {:?}", found.failure);
            assert!(found.failure.is_some());
        }
    }

    #[test]
    fn a_flipped_byte_in_a_compressed_payload_fails_its_file() {
        let paths = chain("check-flip", &layers(), true);
        let mut bytes = std::fs::read(&paths[0]).unwrap();
        // Inside the first payload: past the meta frame and its header.
        let at = bytes.windows(4).position(|w| w == b"data").unwrap() + 60;
        bytes[at] ^= 0x55;
        std::fs::write(&paths[0], &bytes).unwrap();
        let found = check_chain(opened(&paths));
        assert_eq!(found.good, 0, "{:?}", found.failure);
        assert!(found.failure.unwrap().starts_with("data file 0"));
    }
}
