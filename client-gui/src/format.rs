//! Numbers and times as people read them.

use gatehouse_client::ProtocolKind;

/// A byte count: "0 B", "512 B", "1.5 kB", "23.4 MB" (powers of 1000, like file managers).
pub fn bytes(n: u64) -> String {
    scaled(n as f64, "B")
}

/// A rate in bytes per second: "0 B/s", "1.2 MB/s".
pub fn rate(bytes_per_sec: f64) -> String {
    scaled(bytes_per_sec.max(0.0), "B/s")
}

fn scaled(value: f64, unit: &str) -> String {
    const PREFIXES: [&str; 5] = ["", "k", "M", "G", "T"];
    let mut v = value;
    let mut i = 0;
    while v >= 1000.0 && i < PREFIXES.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {unit}")
    } else if v < 10.0 {
        format!("{v:.2} {}{unit}", PREFIXES[i])
    } else if v < 100.0 {
        format!("{v:.1} {}{unit}", PREFIXES[i])
    } else {
        format!("{v:.0} {}{unit}", PREFIXES[i])
    }
}

/// A duration in whole seconds: "42 s", "5 min 03 s", "2 h 05 min", "3 d 4 h".
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m:02} min")
    } else if m > 0 {
        format!("{m} min {s:02} s")
    } else {
        format!("{s} s")
    }
}

/// A short interval: "2 s", "0.5 s".
pub fn interval(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f32())
    }
}

/// `text` with its first letter in upper case (client-core's messages start in lower case,
/// to read well after "error: ").
pub fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The UTC calendar date and time of `unix` seconds: (year, month, day, hour, minute, second).
fn civil(unix: u64) -> (i64, u32, u32, u32, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm.
    let days = (unix / 86_400) as i64;
    let rem = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    )
}

/// "14:03:27" (UTC) for the log panel.
pub fn clock_time(unix: u64) -> String {
    let (_, _, _, h, m, s) = civil(unix);
    format!("{h:02}:{m:02}:{s:02}")
}

/// "2026-11-24 14:03:27 UTC".
pub fn date_time(unix: u64) -> String {
    let (y, mo, d, h, m, s) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02} UTC")
}

/// A protocol as the settings and status show it.
pub fn protocol(kind: ProtocolKind) -> &'static str {
    match kind {
        ProtocolKind::OpenvpnUdp => "OpenVPN over UDP",
        ProtocolKind::OpenvpnTcp => "OpenVPN over TCP",
        ProtocolKind::Ikev2 => "IKEv2",
        ProtocolKind::Quic => "QUIC",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rates_read_naturally() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500), "1.50 kB");
        assert_eq!(bytes(23_456_789), "23.5 MB");
        assert_eq!(bytes(456_000_000), "456 MB");
        assert_eq!(rate(-3.0), "0 B/s");
        assert_eq!(rate(2_000_000.0), "2.00 MB/s");
    }

    #[test]
    fn durations_keep_two_units() {
        assert_eq!(duration(42), "42 s");
        assert_eq!(duration(303), "5 min 03 s");
        assert_eq!(duration(7_500), "2 h 05 min");
        assert_eq!(duration(3 * 86_400 + 4 * 3600 + 5), "3 d 4 h");
    }

    #[test]
    fn intervals_and_sentences() {
        assert_eq!(interval(std::time::Duration::from_secs(2)), "2 s");
        assert_eq!(interval(std::time::Duration::from_millis(100)), "0.1 s");
        assert_eq!(sentence("stored the key"), "Stored the key");
        assert_eq!(sentence(""), "");
    }

    #[test]
    fn unix_times_become_utc_dates() {
        assert_eq!(date_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(date_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(date_time(1_795_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(clock_time(1_795_000_000), "11:06:40");
    }
}
