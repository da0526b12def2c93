//! Log output for the daemons (`gatehoused`, the client service): human-readable lines on
//! stderr, and under systemd, lines the journal files with their priority.
//!
//! systemd connects a service's stderr to the journal and says so in `JOURNAL_STREAM`
//! (`device:inode` of that stream). When stderr is that stream, each line starts with the
//! sd-daemon(3) priority prefix (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), so
//! `journalctl -p warning -u gatehoused` works, and carries no timestamp or colours (the
//! journal has its own).

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The sd-daemon(3) priority of a level.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Whether stderr is the journal stream systemd gave this process.
pub fn stderr_is_journal() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Some(want) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Some((dev, ino)) = want.to_str().and_then(|s| s.split_once(':')) else {
            return false;
        };
        let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
            return false;
        };
        // /proc/self/fd/2 follows to the stream itself (a socket): its device and inode.
        std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Wraps a line format with the journal's priority prefix.
pub struct JournalPrefix<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for JournalPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Installs the global logger: level from `env_var` (default `info`, without boringtun's own
/// lines), to stderr, in the journal's format when stderr is the journal.
pub fn init(env_var: &str) {
    // boringtun logs its WireGuard timers in its own words ("HANDSHAKE(REKEY_TIMEOUT)" every
    // 5 s while a peer is away); the gateway logs what operators read (`connection up`,
    // `connection down`, `client connected`). `GATEHOUSE_LOG=info,boringtun=debug` shows them.
    let filter = tracing_subscriber::EnvFilter::try_from_env(env_var)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,boringtun=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if stderr_is_journal() {
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_target(false)
            .with_level(false)
            .with_ansi(false);
        builder
            .with_ansi(false)
            .event_format(JournalPrefix(format))
            .init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::TRACE), 7);
    }

    #[test]
    fn without_journal_stream_stderr_is_not_the_journal() {
        // SAFETY-free: the variable is read only by this process's tests.
        if std::env::var_os("JOURNAL_STREAM").is_none() {
            assert!(!stderr_is_journal());
        }
    }
}
