//! Sizes as the original VMSnap printed them with `--pretty`.
//!
//! pretty-bytes style: SI units (1000), three significant digits, trailing zeros dropped
//! (`107 GB`, `14.3 GB`, `1.07 GB`, `537 MB`, `4.1 kB`, `0 B`). Users compare these strings
//! with the original's output, which no size crate reproduces exactly, hence these few lines.

const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];

pub fn pretty(bytes: u64) -> String {
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let exponent = ((bytes as f64).log10() / 3.0).floor() as usize;
    let exponent = exponent.min(UNITS.len() - 1);
    let value = bytes as f64 / 1000f64.powi(exponent as i32);
    // toPrecision(3): digits after the point = 3 - digits before it.
    let int_digits = (value.log10().floor() as i32 + 1).max(1);
    let decimals = (3 - int_digits).max(0) as usize;
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text} {}", UNITS[exponent])
}

#[cfg(test)]
mod tests {
    use super::pretty;

    #[test]
    fn matches_the_original() {
        assert_eq!(pretty(107374182400), "107 GB");
        assert_eq!(pretty(14286573568), "14.3 GB");
        assert_eq!(pretty(1073741824), "1.07 GB");
        assert_eq!(pretty(536870912), "537 MB");
        assert_eq!(pretty(4100), "4.1 kB");
        assert_eq!(pretty(21474836480), "21.5 GB");
        assert_eq!(pretty(0), "0 B");
        assert_eq!(pretty(999), "999 B");
        assert_eq!(pretty(1000), "1 kB");
        assert_eq!(pretty(u64::MAX), "18.4 EB");
    }
}
