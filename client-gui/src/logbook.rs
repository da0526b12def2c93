//! The log panel's lines: what the client service streams, plus the app's own messages, kept
//! to the last few thousand, filtered by text and level, copied as plain text for support.

use std::collections::VecDeque;

use gatehouse_client::manager::LogLine;

use crate::format;

/// Lines kept; older ones are dropped.
pub const CAPACITY: usize = 5000;

/// How serious a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Progress.
    Info,
    /// Something went wrong but the client carries on.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    /// The level of a service log line ("info", "warn", "error"; anything else is info).
    pub fn of(line: &LogLine) -> Level {
        match line.level.to_ascii_lowercase().as_str() {
            "warn" | "warning" => Level::Warn,
            "error" => Level::Error,
            _ => Level::Info,
        }
    }

    /// The name used in copied text.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Which lines the panel shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Lines must contain this (case-insensitive); empty matches all.
    pub text: String,
    /// Lines must be at least this serious.
    pub min_level: Level,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            text: String::new(),
            min_level: Level::Info,
        }
    }
}

impl Filter {
    /// Whether `line` passes.
    pub fn matches(&self, line: &LogLine) -> bool {
        Level::of(line) >= self.min_level
            && (self.text.is_empty()
                || line
                    .message
                    .to_lowercase()
                    .contains(&self.text.to_lowercase()))
    }
}

/// The log.
#[derive(Debug, Clone, Default)]
pub struct Logbook {
    lines: VecDeque<LogLine>,
}

impl Logbook {
    /// Appends a line, dropping the oldest beyond [`CAPACITY`].
    pub fn push(&mut self, line: LogLine) {
        if self.lines.len() == CAPACITY {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// Appends a message of the app itself.
    pub fn note(&mut self, time: u64, level: Level, message: impl Into<String>) {
        self.push(LogLine {
            time,
            level: level.as_str().into(),
            message: message.into(),
        });
    }

    /// Every line, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &LogLine> {
        self.lines.iter()
    }

    /// The lines that pass `filter`, oldest first.
    pub fn filtered<'a>(&'a self, filter: &'a Filter) -> impl Iterator<Item = &'a LogLine> + 'a {
        self.lines.iter().filter(move |l| filter.matches(l))
    }

    /// The lines that pass `filter` as text to paste into a support ticket, one per line
    /// with a full UTC time stamp.
    pub fn to_text(&self, filter: &Filter) -> String {
        let mut text = String::new();
        for line in self.filtered(filter) {
            text.push_str(&format!(
                "{} {:5} {}\n",
                format::date_time(line.time),
                Level::of(line).as_str(),
                line.message
            ));
        }
        text
    }

    /// How many lines are kept.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: &str, message: &str) -> LogLine {
        LogLine {
            time: 1_795_000_000,
            level: level.into(),
            message: message.into(),
        }
    }

    #[test]
    fn filters_by_text_and_level_and_copies_what_is_shown() {
        let mut log = Logbook::default();
        log.push(line("info", "work: connecting over openvpn-udp"));
        log.push(line("warn", "work over openvpn-udp: timed out"));
        log.push(line("error", "work: certificate revoked"));
        let all = Filter::default();
        assert_eq!(log.filtered(&all).count(), 3);
        let warn = Filter {
            min_level: Level::Warn,
            ..Filter::default()
        };
        assert_eq!(log.filtered(&warn).count(), 2);
        let text = Filter {
            text: "OPENVPN".into(),
            ..Filter::default()
        };
        assert_eq!(log.filtered(&text).count(), 2);
        assert_eq!(
            log.to_text(&Filter {
                text: "revoked".into(),
                ..Filter::default()
            }),
            "2026-11-18 11:06:40 UTC error work: certificate revoked\n"
        );
    }

    #[test]
    fn keeps_the_newest_lines() {
        let mut log = Logbook::default();
        for i in 0..CAPACITY + 10 {
            log.note(0, Level::Info, format!("line {i}"));
        }
        assert_eq!(log.len(), CAPACITY);
        assert_eq!(
            log.lines().next().map(|l| l.message.as_str()),
            Some("line 10")
        );
    }
}
