//! Bounds on what an input may make pretext allocate, checked before allocating: sizes
//! read from a recipe, a config or a file header are turned into the bytes they imply and
//! compared with one limit, the machine's memory unless `PRETEXT_MAX_ALLOC` says otherwise.

/// The environment variable that sets the limit: bytes, or a number with a `K`, `M`, `G`
/// or `T` suffix (powers of 1024), e.g. `PRETEXT_MAX_ALLOC=64G`.
pub const ENV: &str = "PRETEXT_MAX_ALLOC";

/// Used when neither the environment nor `/proc/meminfo` gives a limit.
const FALLBACK: u64 = 16 << 30;

/// The most bytes one input may make pretext allocate.
pub fn max_alloc() -> u64 {
    if let Some(n) = std::env::var(ENV).ok().and_then(|s| parse_size(&s)) {
        return n;
    }
    memory_total().unwrap_or(FALLBACK)
}

/// The machine's memory, from `/proc/meminfo` (`MemTotal`).
fn memory_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `123`, `64K`, `1.5G`, `2TiB` → bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let shift = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return None,
    };
    let bytes = number * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Bytes in a human unit: `512 B`, `3.2 MiB`, `1.5 TiB`.
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{v:.1} {}", UNITS[unit]),
    }
}

/// `Err` with a message saying what `what` would take and how to raise the limit, when
/// `bytes` is over it.
pub fn check(bytes: u128, what: &str) -> std::result::Result<(), String> {
    let limit = max_alloc();
    if bytes <= limit as u128 {
        return Ok(());
    }
    Err(format!(
        "{what} would take about {}, more than the {} pretext may allocate ({}; set {ENV}=SIZE, e.g. {ENV}=64G, to allow more)",
        human(bytes),
        human(limit as u128),
        match std::env::var(ENV) {
            Ok(_) => ENV.to_string(),
            Err(_) => "this machine's memory".to_string(),
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("2TiB"), Some(2 << 40));
        assert_eq!(parse_size("8 MB"), Some(8 << 20));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("0"), None);
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
