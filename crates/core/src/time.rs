//! Virtual or real time, as nanoseconds since the start of a run.
//!
//! Nodes never read a clock: the driver passes [`Time`] in [`crate::Env`].

/// A point in time: nanoseconds since the driver started. The simulator's clock starts at 0.
pub type Time = u64;

/// A span of time in nanoseconds.
pub type Duration = u64;

/// Nanoseconds in one millisecond.
pub const MILLISECOND: Duration = 1_000_000;

/// Nanoseconds in one second.
pub const SECOND: Duration = 1_000_000_000;

/// Formats nanoseconds for people: `1.250s`, `37ms`, `800µs`.
pub fn format_duration(nanos: Duration) -> String {
    if nanos >= SECOND {
        format!("{:.3}s", nanos as f64 / SECOND as f64)
    } else if nanos >= MILLISECOND {
        format!("{}ms", nanos / MILLISECOND)
    } else {
        format!("{}µs", nanos / 1_000)
    }
}

/// Parses a duration written as `250ms`, `30s`, `2m`, `1500us`, `10ns` or bare nanoseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| {
        format!("invalid duration '{text}': expected a number followed by ns, us, ms, s or m")
    })?;
    let scale = match unit.trim() {
        "" | "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        other => {
            return Err(format!(
                "invalid duration '{text}': unknown unit '{other}' (use ns, us, ms, s or m)"
            ))
        }
    };
    let nanos = number * scale;
    if !nanos.is_finite() || nanos < 0.0 || nanos > u64::MAX as f64 {
        return Err(format!("invalid duration '{text}': out of range"));
    }
    Ok(nanos as Duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("30s"), Ok(30 * SECOND));
        assert_eq!(parse_duration("250ms"), Ok(250 * MILLISECOND));
        assert_eq!(parse_duration("1.5s"), Ok(1_500 * MILLISECOND));
        assert_eq!(parse_duration("2m"), Ok(120 * SECOND));
        assert_eq!(parse_duration("7"), Ok(7));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_duration(1_250 * MILLISECOND), "1.250s");
        assert_eq!(format_duration(37 * MILLISECOND), "37ms");
    }
}
