//! Reading stock OpenVPN `.ovpn` client files - the ones install scripts and appliances write
//! (angristan's and Nyr's openvpn-install, PiVPN, pfSense/OPNsense client export, OpenVPN
//! Access Server).
//!
//! Every directive has a fate. What Gatehouse does like a stock OpenVPN 2.6 client is honoured:
//! several `remote`s (tried in order, shuffled once with `remote-random`), `<connection>`
//! blocks, `proto`/`port` per remote, `tls-auth` (+ `key-direction`, `auth`), `tls-crypt`,
//! `tls-crypt-v2` (inline or as files next to the `.ovpn`), `cipher`/`data-ciphers`,
//! `verify-x509-name`, `remote-cert-tls`, `redirect-gateway def1`, the compression settings a
//! 2.6 server can work with. What changes nothing here is accepted quietly or with a note
//! (`directives.rs`). What Gatehouse cannot honour refuses the import, naming the directive
//! and why - except directives the file lists in `ignore-unknown-option` or writes after
//! `setenv opt`, which stock OpenVPN skips too when it does not know them: those are
//! skipped with a warning. Nothing is dropped without a word.

mod directives;
mod keys;
#[cfg(test)]
mod tests;

use std::path::Path;

use gatehouse_engine::openvpn::data::Cipher;

use crate::error::{ProfileError, Result};
use crate::profile::{
    ControlWrap, Protocol, ProtocolKind, Remote, WrapKind, X509NameCheck, X509NameKind,
};
use directives::{CONNECTION_OPTIONS, Fate};

/// What an `.ovpn` file holds that a Gatehouse connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvpnProfile {
    /// The gateway: host of the first remote.
    pub gateway: String,
    /// One entry per distinct protocol of the remotes, in order, with its first port.
    pub protocols: Vec<Protocol>,
    /// The servers to try, in the file's order.
    pub remotes: Vec<Remote>,
    /// `remote-random`: shuffle `remotes` once per connection.
    pub remote_random: bool,
    /// `redirect-gateway def1` in the file: full tunnel even if the server does not push it.
    pub redirect_gateway: bool,
    /// Data ciphers to offer (supported ones only, upper case, in the file's order).
    pub ciphers: Vec<String>,
    /// `<ca>` PEM.
    pub ca_pem: String,
    /// `<cert>` PEM (plus `<extra-certs>`).
    pub cert_pem: String,
    /// `<key>` PEM (unencrypted PKCS#8, SEC1 or PKCS#1).
    pub key_pem: String,
    /// The control-channel wrapper, if any.
    pub control_wrap: Option<ControlWrap>,
    /// The wrapper's key text (a secret, like `key_pem`).
    pub wrap_key_pem: Option<String>,
    /// `verify-x509-name`.
    pub verify_x509_name: Option<X509NameCheck>,
    /// `peer-fingerprint` (SHA-256, lower-case hex without colons).
    pub peer_fingerprints: Vec<String>,
    /// `tls-version-min` (`1.2` or `1.3`), when it narrows what Gatehouse offers.
    pub tls_version_min: Option<String>,
    /// `tls-version-max` (`1.2` or `1.3`), when it narrows what Gatehouse offers.
    pub tls_version_max: Option<String>,
    /// One line per thing in the file that Gatehouse does differently, for the user to read.
    pub warnings: Vec<String>,
}

const DEFAULT_PORT: u16 = 1194;

/// OpenVPN 2.6's default `data-ciphers`.
const DEFAULT_DATA_CIPHERS: [&str; 3] = ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"];

/// Parses an `.ovpn` file's text that stands alone (no folder to read referenced files
/// from). `source_name` (a file name) is only used in messages.
pub fn parse(text: &str, source_name: &str) -> Result<OvpnProfile> {
    parse_in(text, source_name, None)
}

/// Parses an `.ovpn` file's text; files it names (`ca ca.crt`, `tls-auth ta.key 1`) are read
/// from `dir`, the folder the `.ovpn` file is in, as OpenVPN does when started there.
pub fn parse_in(text: &str, source_name: &str, dir: Option<&Path>) -> Result<OvpnProfile> {
    let lines = split_lines(text);
    let mut p = Parser::new(source_name, dir, &lines);
    p.run()?;
    p.finish()
}

/// A line's words, with OpenVPN's quoting: `"..."` and `'...'` group words, `\` escapes in
/// double quotes, and a `#` or `;` that starts a word begins a comment.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&c) = chars.peek() else { break };
        if c == '#' || c == ';' {
            break;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' => {
                    while let Some(c) = chars.next() {
                        match c {
                            '"' => break,
                            '\\' => word.extend(chars.next()),
                            c => word.push(c),
                        }
                    }
                }
                '\'' => word.extend(chars.by_ref().take_while(|c| *c != '\'')),
                c => word.push(c),
            }
        }
        out.push(word);
    }
    out
}

fn split_lines(text: &str) -> Vec<(usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .collect()
}

/// A `remote` as written, before defaults are filled in.
#[derive(Debug, Clone)]
struct RemoteLine {
    host: String,
    port: Option<u16>,
    kind: Option<ProtocolKind>,
    /// Set for remotes inside `<connection>`: that block's proto and port (with the
    /// defaults in force where it started).
    block: Option<(ProtocolKind, u16)>,
}

/// Where a wrapper key or certificate came from.
#[derive(Debug, Clone)]
struct Source {
    line: usize,
    text: String,
}

struct Parser<'a> {
    src: &'a str,
    dir: Option<&'a Path>,
    lines: &'a [(usize, &'a str)],
    /// Directives the file lists in `ignore-unknown-option`.
    ignore_unknown: Vec<String>,
    /// `setenv FORWARD_COMPATIBLE 1`: unknown directives are warnings.
    forward_compatible: bool,
    proto: ProtocolKind,
    port: u16,
    remotes: Vec<RemoteLine>,
    remote_random: bool,
    redirect_gateway: bool,
    data_ciphers: Option<Vec<String>>,
    fallback_cipher: Option<String>,
    ca: Option<Source>,
    cert: Option<Source>,
    extra_certs: Option<Source>,
    key: Option<Source>,
    /// The wrapper, its key, and the direction given on a `tls-auth FILE DIR` line.
    wrap: Option<(WrapKind, Source, Option<u8>)>,
    key_direction: Option<u8>,
    digest: Option<(usize, String)>,
    verify_x509_name: Option<X509NameCheck>,
    peer_fingerprints: Vec<String>,
    /// `tls-version-min` / `tls-version-max` as (line, minor version: 0 = TLS 1.0 ... 3).
    tls_min: Option<(usize, u8)>,
    tls_max: Option<(usize, u8)>,
    warnings: Vec<String>,
    skipped: Vec<String>,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, dir: Option<&'a Path>, lines: &'a [(usize, &'a str)]) -> Self {
        // `ignore-unknown-option` and `setenv FORWARD_COMPATIBLE` apply to the whole file
        // here (OpenVPN needs them before the lines they excuse; being lenient about the
        // order only ever skips what the file asked to skip).
        let mut ignore_unknown = Vec::new();
        let mut forward_compatible = false;
        for (_, line) in lines {
            let w = words(line);
            match w
                .first()
                .map(|f| f.trim_start_matches("--").to_ascii_lowercase())
            {
                Some(f) if f == "ignore-unknown-option" => ignore_unknown.extend(
                    w[1..]
                        .iter()
                        .map(|o| o.trim_start_matches("--").to_ascii_lowercase()),
                ),
                Some(f) if f == "setenv" => {
                    forward_compatible |= w.get(1).is_some_and(|v| v == "FORWARD_COMPATIBLE")
                        && w.get(2).is_some_and(|v| v == "1");
                }
                _ => {}
            }
        }
        Parser {
            src,
            dir,
            lines,
            ignore_unknown,
            forward_compatible,
            proto: ProtocolKind::OpenvpnUdp,
            port: DEFAULT_PORT,
            remotes: Vec::new(),
            remote_random: false,
            redirect_gateway: false,
            data_ciphers: None,
            fallback_cipher: None,
            ca: None,
            cert: None,
            extra_certs: None,
            key: None,
            wrap: None,
            key_direction: None,
            digest: None,
            verify_x509_name: None,
            peer_fingerprints: Vec::new(),
            tls_min: None,
            tls_max: None,
            warnings: Vec::new(),
            skipped: Vec::new(),
        }
    }

    fn err(&self, line: Option<usize>, reason: impl Into<String>) -> ProfileError {
        ProfileError::InvalidOvpn {
            source_name: self.src.to_string(),
            line,
            reason: reason.into(),
        }
    }

    fn warn(&mut self, w: impl Into<String>) {
        let w = w.into();
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    fn run(&mut self) -> Result<()> {
        let mut i = 0;
        while i < self.lines.len() {
            let (line_no, line) = self.lines[i];
            i += 1;
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(tag) = line.strip_prefix('<').and_then(|l| l.strip_suffix('>')) {
                if tag.starts_with('/') {
                    return Err(self.err(
                        Some(line_no),
                        format!("{line} closes a block that was never opened"),
                    ));
                }
                let tag = tag.to_ascii_lowercase();
                let close = format!("</{tag}>");
                let start = i;
                while i < self.lines.len() && !self.lines[i].1.eq_ignore_ascii_case(&close) {
                    i += 1;
                }
                if i == self.lines.len() {
                    return Err(self.err(
                        Some(line_no),
                        format!("<{tag}> is never closed; add {close} after its content"),
                    ));
                }
                let body_lines = &self.lines[start..i];
                i += 1;
                if tag == "connection" {
                    self.connection_block(line_no, body_lines)?;
                } else {
                    let mut body = String::new();
                    for (_, l) in body_lines {
                        body.push_str(l);
                        body.push('\n');
                    }
                    self.inline_block(line_no, &tag, body)?;
                }
                continue;
            }
            let w = words(line);
            if w.is_empty() {
                continue;
            }
            self.directive(line_no, line, &w, false)?;
        }
        Ok(())
    }

    /// One directive outside `<connection>`. `excused`: written after `setenv opt`.
    fn directive(&mut self, line_no: usize, line: &str, w: &[String], excused: bool) -> Result<()> {
        let name = w[0].trim_start_matches("--").to_ascii_lowercase();
        let args: Vec<&str> = w[1..].iter().map(String::as_str).collect();
        let arg = |i: usize| args.get(i).copied();
        match name.as_str() {
            "setenv" if arg(0) == Some("opt") => {
                if w.len() < 3 {
                    return Err(self.err(Some(line_no), "`setenv opt` needs a directive after it"));
                }
                return self.directive(line_no, line, &w[2..], true);
            }
            // Environment for scripts (which Gatehouse never runs), or the keyword handled
            // in `new`.
            "setenv" | "ignore-unknown-option" => {}
            "remote" => {
                let r = self.remote(line_no, &args, None)?;
                self.remotes.push(r);
            }
            "remote-random" => self.remote_random = true,
            "proto" => self.proto = self.parse_proto(arg(0).unwrap_or_default(), line_no)?,
            "port" | "rport" => self.port = self.parse_port(arg(0).unwrap_or_default(), line_no)?,
            "dev" | "dev-type" => self.dev(line_no, line, arg(0).unwrap_or_default())?,
            "data-ciphers" | "ncp-ciphers" => {
                self.data_ciphers = Some(
                    arg(0)
                        .unwrap_or_default()
                        .split(':')
                        .map(|c| c.trim_start_matches('?'))
                        .filter(|c| !c.is_empty())
                        .map(|c| c.to_ascii_uppercase())
                        .collect(),
                );
            }
            "cipher" | "data-ciphers-fallback" => {
                self.fallback_cipher = arg(0).map(|c| c.to_ascii_uppercase());
            }
            "auth" => {
                let d = arg(0).unwrap_or_default().to_string();
                self.digest = Some((line_no, d));
            }
            "remote-cert-tls" => {
                if !arg(0).is_some_and(|a| a.eq_ignore_ascii_case("server")) {
                    return Err(self.err(
                        Some(line_no),
                        format!(
                            "`{line}`: Gatehouse connects to servers, so it can only check for `remote-cert-tls server`"
                        ),
                    ));
                }
            }
            "remote-cert-eku" => {
                let eku = args.join(" ");
                let server_auth = [
                    "TLS Web Server Authentication",
                    "serverAuth",
                    "1.3.6.1.5.5.7.3.1",
                ];
                if !server_auth.iter().any(|s| s.eq_ignore_ascii_case(&eku)) {
                    return Err(self.err(
                        Some(line_no),
                        format!("`{line}`: Gatehouse can only require the serverAuth usage of the server certificate; use `remote-cert-tls server`"),
                    ));
                }
            }
            "verify-x509-name" => self.verify_x509_name(line_no, line, &args)?,
            "tls-version-min" | "tls-version-max" => {
                let v = arg(0).unwrap_or_default();
                let minor = match v {
                    "1.0" => 0,
                    "1.1" => 1,
                    "1.2" => 2,
                    "1.3" => 3,
                    _ => {
                        return Err(self.err(
                            Some(line_no),
                            format!("`{line}`: {v:?} is not a TLS version (1.0 to 1.3)"),
                        ));
                    }
                };
                // `tls-version-min X or-highest` asks for the highest both support: 1.3 if
                // the server has it, which is what Gatehouse prefers anyway.
                if name == "tls-version-min" {
                    self.tls_min = Some((line_no, minor));
                } else {
                    self.tls_max = Some((line_no, minor));
                }
            }
            "peer-fingerprint" => {
                let fp = self.fingerprint(line_no, arg(0).unwrap_or_default())?;
                self.peer_fingerprints.push(fp);
            }
            "redirect-gateway" => self.redirect_gateway(line_no, line, &args)?,
            "compress" | "comp-lzo" | "allow-compression" | "comp-noadapt" => {
                self.compression(line_no, line, &name, arg(0))?;
            }
            "ca" | "cert" | "key" | "extra-certs" | "tls-auth" | "tls-crypt" | "tls-crypt-v2" => {
                self.file_option(line_no, &name, &args)?;
            }
            "key-direction" => self.key_direction = Some(self.parse_direction(arg(0), line_no)?),
            n => self.other(line_no, line, n, excused)?,
        }
        Ok(())
    }

    /// A directive the parser does not act on: quiet, noted, refused or unknown.
    fn other(&mut self, line_no: usize, line: &str, name: &str, excused: bool) -> Result<()> {
        let listed = self.ignore_unknown.iter().any(|o| o == name);
        match directives::fate(name) {
            Some(Fate::Quiet) => Ok(()),
            Some(Fate::Note(note)) => {
                self.warn(note);
                Ok(())
            }
            Some(Fate::Refuse(why)) if excused || listed => {
                let how = if excused { "after `setenv opt`" } else { "in ignore-unknown-option" };
                self.warn(format!(
                    "line {line_no}: `{line}` is skipped because the file lists it {how} (Gatehouse cannot honour it: {why})"
                ));
                Ok(())
            }
            Some(Fate::Refuse(why)) => Err(self.err(Some(line_no), format!("`{line}`: {why}"))),
            None if excused || listed || self.forward_compatible => {
                if !self.skipped.iter().any(|s| s == name) {
                    self.skipped.push(name.to_string());
                }
                Ok(())
            }
            None => Err(self.err(
                Some(line_no),
                format!(
                    "unknown directive `{name}`: stock OpenVPN refuses it too; remove the line, or list it in `ignore-unknown-option {name}` if the server's administrator says it is optional"
                ),
            )),
        }
    }

    fn dev(&self, line_no: usize, line: &str, dev: &str) -> Result<()> {
        if dev.to_ascii_lowercase().starts_with("tun") {
            return Ok(());
        }
        Err(self.err(
            Some(line_no),
            format!(
                "`{line}`: Gatehouse carries IP packets (dev tun), not Ethernet frames (dev tap); ask the server's administrator for a tun profile"
            ),
        ))
    }

    fn remote(
        &self,
        line_no: usize,
        args: &[&str],
        block: Option<(ProtocolKind, u16)>,
    ) -> Result<RemoteLine> {
        let Some(host) = args.first() else {
            return Err(self.err(
                Some(line_no),
                "`remote` needs a host: `remote HOST [PORT] [udp|tcp]`",
            ));
        };
        let port = args
            .get(1)
            .map(|p| self.parse_port(p, line_no))
            .transpose()?;
        let kind = args
            .get(2)
            .map(|p| self.parse_proto(p, line_no))
            .transpose()?;
        Ok(RemoteLine {
            host: host.to_string(),
            port,
            kind,
            block,
        })
    }

    /// A `<connection>` block: a remote with its own proto and port; the directives outside
    /// the block so far are its defaults.
    fn connection_block(&mut self, start: usize, body: &[(usize, &str)]) -> Result<()> {
        let (mut proto, mut port) = (self.proto, self.port);
        let mut remotes = Vec::new();
        for (line_no, line) in body {
            let line_no = *line_no;
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let w = words(line);
            let Some(first) = w.first() else { continue };
            let name = first.trim_start_matches("--").to_ascii_lowercase();
            let args: Vec<&str> = w[1..].iter().map(String::as_str).collect();
            if !CONNECTION_OPTIONS.contains(&name.as_str()) {
                return Err(self.err(
                    Some(line_no),
                    format!("`{name}` is not allowed inside <connection> (OpenVPN refuses it too); move it out of the block"),
                ));
            }
            match name.as_str() {
                "remote" => remotes.push((
                    line_no,
                    args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                )),
                "proto" => {
                    proto = self.parse_proto(args.first().copied().unwrap_or_default(), line_no)?
                }
                "port" | "rport" => {
                    port = self.parse_port(args.first().copied().unwrap_or_default(), line_no)?
                }
                "tls-auth" | "tls-crypt" | "tls-crypt-v2" | "key-direction" => {
                    return Err(self.err(
                        Some(line_no),
                        format!("a control-channel key per <connection> is not supported; put `{name}` outside the blocks (one key for all servers)"),
                    ));
                }
                _ => self.other(line_no, line, &name, false)?,
            }
        }
        if remotes.is_empty() {
            return Err(self.err(Some(start), "<connection> has no `remote` line"));
        }
        for (line_no, args) in remotes {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = self.remote(line_no, &args, Some((proto, port)))?;
            self.remotes.push(r);
        }
        Ok(())
    }

    fn inline_block(&mut self, line_no: usize, tag: &str, body: String) -> Result<()> {
        let src = Some(Source {
            line: line_no,
            text: body,
        });
        match tag {
            "ca" => self.ca = src,
            "cert" => self.cert = src,
            "extra-certs" => self.extra_certs = src,
            "peer-fingerprint" => {
                for (i, l) in src.map(|s| s.text).unwrap_or_default().lines().enumerate() {
                    let l = l.trim();
                    if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                        continue;
                    }
                    let fp = self.fingerprint(line_no + 1 + i, l)?;
                    self.peer_fingerprints.push(fp);
                }
            }
            "key" => self.key = src,
            "tls-auth" | "tls-crypt" | "tls-crypt-v2" => {
                let kind = wrap_kind(tag);
                self.set_wrap(
                    line_no,
                    kind,
                    Source {
                        line: line_no,
                        text: src.map(|s| s.text).unwrap_or_default(),
                    },
                    None,
                )?;
            }
            other => {
                match directives::fate(other) {
                    Some(Fate::Refuse(why)) => {
                        return Err(self.err(Some(line_no), format!("<{other}>: {why}")));
                    }
                    _ if other == "dh" => {
                        return Err(self.err(
                            Some(line_no),
                            "<dh>: this is a server configuration, not a client profile",
                        ));
                    }
                    _ => {
                        return Err(self.err(
                        Some(line_no),
                        format!("<{other}> is not an inline block a client profile can hold; remove it"),
                    ));
                    }
                }
            }
        }
        Ok(())
    }

    fn set_wrap(
        &mut self,
        line_no: usize,
        kind: WrapKind,
        src: Source,
        dir: Option<u8>,
    ) -> Result<()> {
        if let Some((old, _, _)) = &self.wrap
            && *old != kind
        {
            return Err(self.err(
                Some(line_no),
                format!("{} and {} cannot be used together (OpenVPN refuses it too); keep the one the server uses", old.as_str(), kind.as_str()),
            ));
        }
        self.wrap = Some((kind, src, dir));
        Ok(())
    }

    /// `ca FILE`, `tls-auth FILE [DIR]`, ...: `[inline]` (the block comes separately) or a
    /// file next to the `.ovpn` file.
    fn file_option(&mut self, line_no: usize, name: &str, args: &[&str]) -> Result<()> {
        let Some(file) = args.first().copied() else {
            return Err(self.err(
                Some(line_no),
                format!("`{name}` needs a file name or [inline]"),
            ));
        };
        let inline = file.eq_ignore_ascii_case("[inline]");
        let direction = match (name, args.get(1)) {
            ("tls-auth", Some(d)) if !inline => Some(self.parse_direction(Some(d), line_no)?),
            _ => None,
        };
        if name == "tls-crypt-v2" && args.get(1).is_some() {
            // force-cookie / allow-noncookie are server-side choices.
        }
        if inline {
            if let Some(d) = direction {
                self.key_direction = Some(d);
            }
            return Ok(());
        }
        let text = self.read_beside(line_no, name, file)?;
        let src = Source {
            line: line_no,
            text,
        };
        match name {
            "ca" => self.ca = Some(src),
            "cert" => self.cert = Some(src),
            "extra-certs" => self.extra_certs = Some(src),
            "key" => self.key = Some(src),
            _ => self.set_wrap(line_no, wrap_kind(name), src, direction)?,
        }
        Ok(())
    }

    fn read_beside(&self, line_no: usize, name: &str, file: &str) -> Result<String> {
        let inline_hint =
            format!("put its content inline instead: <{name}>, the text of {file}, </{name}>");
        let Some(dir) = self.dir else {
            return Err(self.err(
                Some(line_no),
                format!("`{name} {file}` refers to a separate file, which cannot be read here; import the .ovpn file from its folder, or {inline_hint}"),
            ));
        };
        let path = dir.join(file);
        std::fs::read_to_string(&path).map_err(|e| {
            self.err(
                Some(line_no),
                format!("`{name} {file}`: cannot read {} ({e}); keep the file next to the .ovpn file, or {inline_hint}", path.display()),
            )
        })
    }

    /// A `peer-fingerprint`: 32 bytes as hex, colons optional.
    fn fingerprint(&self, line_no: usize, text: &str) -> Result<String> {
        let hex: String = text
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(hex);
        }
        Err(self.err(
            Some(line_no),
            format!("peer-fingerprint {text:?} is not a SHA-256 fingerprint (32 hex bytes, like AB:CD:...)"),
        ))
    }

    fn verify_x509_name(&mut self, line_no: usize, line: &str, args: &[&str]) -> Result<()> {
        let Some(value) = args.first() else {
            return Err(self.err(Some(line_no), "`verify-x509-name` needs a name"));
        };
        let kind = match args.get(1).map(|k| k.to_ascii_lowercase()).as_deref() {
            None | Some("subject") => X509NameKind::Subject,
            Some("name") => X509NameKind::Name,
            Some("name-prefix") => X509NameKind::NamePrefix,
            Some(other) => {
                return Err(self.err(
                    Some(line_no),
                    format!("`{line}`: unknown type {other:?}; use subject, name or name-prefix"),
                ));
            }
        };
        self.verify_x509_name = Some(X509NameCheck {
            kind,
            value: value.to_string(),
        });
        Ok(())
    }

    fn redirect_gateway(&mut self, line_no: usize, line: &str, flags: &[&str]) -> Result<()> {
        for flag in flags {
            match flag.to_ascii_lowercase().as_str() {
                // def1 is how Gatehouse always redirects (0.0.0.0/1 + 128.0.0.0/1); a host
                // route to the server is always kept, which covers `local`/`autolocal` too.
                "def1" | "local" | "autolocal" | "bypass-dhcp" => {}
                "bypass-dns" => self.warn(
                    "redirect-gateway bypass-dns is not applied: DNS servers outside the tunnel are reached through it too",
                ),
                "ipv6" | "!ipv4" => {
                    return Err(self.err(
                        Some(line_no),
                        format!("`{line}`: IPv6 is not tunnelled by Gatehouse, so its IPv6 traffic cannot be redirected; remove `{flag}`"),
                    ));
                }
                other => {
                    return Err(self.err(
                        Some(line_no),
                        format!("`{line}`: flag {other:?} is not supported; Gatehouse redirects with def1"),
                    ));
                }
            }
        }
        self.redirect_gateway = true;
        Ok(())
    }

    /// Compression: Gatehouse never compresses and adds no compression byte to what it sends
    /// (it announces no compression, like an OpenVPN client built without it). It strips the
    /// `stub-v2` framing a server pushes.
    fn compression(
        &mut self,
        line_no: usize,
        line: &str,
        name: &str,
        alg: Option<&str>,
    ) -> Result<()> {
        let alg = alg.map(str::to_ascii_lowercase);
        match (name, alg.as_deref()) {
            ("comp-noadapt", _) | ("allow-compression", Some("no")) | ("compress", Some("stub-v2")) => {}
            ("allow-compression", _) => self.warn(
                "allow-compression is not applied: Gatehouse never compresses and refuses compressed packets",
            ),
            ("comp-lzo", _) => self.warn(
                "comp-lzo: Gatehouse sends packets without compression framing and announces no compression; the server must say `compress migrate` (OpenVPN 2.5+: no compression for clients that announce none) - a server that still says comp-lzo drops this client's packets",
            ),
            ("compress", Some("lz4-v2")) => self.warn(
                "compress lz4-v2: Gatehouse never compresses (its packets need no lz4-v2 framing); a server older than OpenVPN 2.6 that sends compressed packets would have them dropped",
            ),
            _ => {
                return Err(self.err(
                    Some(line_no),
                    format!("`{line}`: this compression framing puts a byte in front of every packet, which Gatehouse does not do; set `compress stub-v2` (or no compression) on the server and in this file"),
                ));
            }
        }
        Ok(())
    }

    fn parse_direction(&self, text: Option<&str>, line_no: usize) -> Result<u8> {
        match text {
            Some("0") => Ok(0),
            Some("1") => Ok(1),
            other => Err(self.err(
                Some(line_no),
                format!(
                    "key direction {:?} is not 0 or 1",
                    other.unwrap_or_default()
                ),
            )),
        }
    }

    fn parse_port(&self, text: &str, line_no: usize) -> Result<u16> {
        match text.parse::<u16>() {
            Ok(p) if p != 0 => Ok(p),
            _ => Err(self.err(
                Some(line_no),
                format!("{text:?} is not a port number (1-65535)"),
            )),
        }
    }

    fn parse_proto(&self, text: &str, line_no: usize) -> Result<ProtocolKind> {
        match text.to_ascii_lowercase().as_str() {
            "udp" | "udp4" | "udp6" => Ok(ProtocolKind::OpenvpnUdp),
            "tcp" | "tcp4" | "tcp6" | "tcp-client" | "tcp4-client" | "tcp6-client" => {
                Ok(ProtocolKind::OpenvpnTcp)
            }
            _ => Err(self.err(
                Some(line_no),
                format!("protocol {text:?} is not one a client can use; use udp or tcp"),
            )),
        }
    }

    fn finish(mut self) -> Result<OvpnProfile> {
        if !self.skipped.is_empty() {
            self.warnings.push(format!(
                "these directives are unknown to Gatehouse and skipped, as the file allows: {}",
                self.skipped.join(", ")
            ));
        }
        let remotes: Vec<Remote> = self
            .remotes
            .iter()
            .map(|r| {
                let (kind, port) = r.block.unwrap_or((self.proto, self.port));
                Remote {
                    host: r.host.clone(),
                    port: r.port.unwrap_or(port),
                    kind: r.kind.unwrap_or(kind),
                }
            })
            .collect();
        let Some(first) = remotes.first() else {
            return Err(self.err(
                None,
                "no `remote HOST [PORT]` line naming the server; add one",
            ));
        };
        let gateway = first.host.clone();
        // Gatehouse speaks TLS 1.2 and 1.3; the file may narrow that, not widen it.
        let (min, max) = (
            self.tls_min.map_or(2, |m| m.1.max(2)),
            self.tls_max.map_or(3, |m| m.1),
        );
        if max < min {
            let line = self.tls_max.map(|m| m.0);
            return Err(self.err(
                line,
                "tls-version-max: Gatehouse speaks TLS 1.2 and 1.3 only; a lower maximum cannot be met - ask for a server that does TLS 1.2",
            ));
        }
        let tls_version_min = (min == 3).then(|| "1.3".to_string());
        let tls_version_max = (max == 2).then(|| "1.2".to_string());
        let mut protocols: Vec<Protocol> = Vec::new();
        for r in &remotes {
            if !protocols.iter().any(|p| p.kind == r.kind) {
                protocols.push(Protocol {
                    kind: r.kind,
                    port: r.port,
                });
            }
        }
        let ciphers = pick_ciphers(
            self.data_ciphers.take(),
            self.fallback_cipher.take(),
            &mut self.warnings,
        )
        .map_err(|reason| self.err(None, reason))?;

        let block = |b: Option<Source>, tag: &str| {
            b.ok_or_else(|| {
                self.err(
                    None,
                    format!(
                        "no <{tag}> block (or `{tag} FILE` next to the .ovpn file); paste the PEM text between <{tag}> and </{tag}>"
                    ),
                )
            })
        };
        // With peer-fingerprint and no <ca>, the fingerprint is the check (angristan's
        // fingerprint mode; OpenVPN 2.6).
        let ca = match self.ca.clone() {
            None if !self.peer_fingerprints.is_empty() => Source {
                line: 0,
                text: String::new(),
            },
            other => block(other, "ca")?,
        };
        let cert = block(self.cert.clone(), "cert")?;
        let key = block(self.key.clone(), "key")?;
        if !ca.text.is_empty() {
            check_certificates(&ca.text, "ca").map_err(|r| self.err(Some(ca.line), r))?;
        }
        check_certificates(&cert.text, "cert").map_err(|r| self.err(Some(cert.line), r))?;
        check_key(&key.text).map_err(|r| self.err(Some(key.line), r))?;
        let mut cert_pem = cert.text;
        if let Some(extra) = &self.extra_certs {
            check_certificates(&extra.text, "extra-certs")
                .map_err(|r| self.err(Some(extra.line), r))?;
            cert_pem.push_str(&extra.text);
        }

        let (control_wrap, wrap_key_pem) = match self.wrap.take() {
            None => (None, None),
            Some((kind, src, file_dir)) => {
                keys::check(kind, &src.text).map_err(|r| self.err(Some(src.line), r))?;
                let (direction, digest) = if kind == WrapKind::TlsAuth {
                    let digest = match &self.digest {
                        None => None,
                        Some((line, name)) => Some(keys::tls_auth_digest(name).ok_or_else(|| {
                            self.err(
                                Some(*line),
                                format!("`auth {name}`: tls-auth with this digest is not supported; Gatehouse supports SHA1, SHA256, SHA384 and SHA512"),
                            )
                        })?),
                    };
                    (file_dir.or(self.key_direction), digest)
                } else {
                    (None, None)
                };
                (
                    Some(ControlWrap {
                        kind,
                        direction,
                        digest,
                    }),
                    Some(src.text),
                )
            }
        };

        Ok(OvpnProfile {
            gateway,
            protocols,
            remotes,
            remote_random: self.remote_random,
            redirect_gateway: self.redirect_gateway,
            ciphers,
            ca_pem: ca.text,
            cert_pem,
            key_pem: key.text,
            control_wrap,
            wrap_key_pem,
            verify_x509_name: self.verify_x509_name,
            peer_fingerprints: self.peer_fingerprints,
            tls_version_min,
            tls_version_max,
            warnings: self.warnings,
        })
    }
}

fn wrap_kind(name: &str) -> WrapKind {
    match name {
        "tls-auth" => WrapKind::TlsAuth,
        "tls-crypt" => WrapKind::TlsCrypt,
        _ => WrapKind::TlsCryptV2,
    }
}

/// Whether the engine implements data cipher `name`.
fn supported(name: &str) -> bool {
    Cipher::from_openvpn_name(name).is_some()
}

/// Works out the ciphers to offer like OpenVPN 2.6 does: `data-ciphers` if given (else its
/// default list), plus `cipher` / `data-ciphers-fallback` - limited to what we implement.
fn pick_ciphers(
    data_ciphers: Option<Vec<String>>,
    fallback: Option<String>,
    warnings: &mut Vec<String>,
) -> std::result::Result<Vec<String>, String> {
    let given = data_ciphers.is_some();
    let wanted = data_ciphers.unwrap_or_else(|| DEFAULT_DATA_CIPHERS.map(String::from).to_vec());
    let (mut ciphers, unsupported): (Vec<String>, Vec<String>) =
        wanted.into_iter().partition(|c| supported(c));
    let ours: Vec<&str> = DEFAULT_DATA_CIPHERS
        .into_iter()
        .filter(|c| supported(c))
        .collect();
    if given && !unsupported.is_empty() {
        warnings.push(format!(
            "data cipher(s) {} are not supported and are not offered (Gatehouse supports {})",
            unsupported.join(", "),
            ours.join(", ")
        ));
    }
    if let Some(fallback) = fallback {
        if supported(&fallback) {
            if !ciphers.contains(&fallback) {
                ciphers.push(fallback);
            }
        } else if fallback != "NONE" || !given {
            warnings.push(format!(
                "cipher {fallback} is not supported (it is only used with servers older than OpenVPN 2.4); Gatehouse offers {}, which the server must accept",
                if ciphers.is_empty() { ours.join(", ") } else { ciphers.join(", ") }
            ));
        }
    }
    if ciphers.is_empty() {
        return Err(format!(
            "none of the data ciphers in this file is supported; Gatehouse offers {} - if the server accepts one, add `data-ciphers {}`",
            ours.join(", "),
            ours.join(":")
        ));
    }
    Ok(ciphers)
}

/// `text` must be one or more PEM certificates.
pub(crate) fn check_certificates(text: &str, tag: &str) -> std::result::Result<(), String> {
    match pem::parse_many(text) {
        Ok(all) if !all.is_empty() && all.iter().all(|p| p.tag() == "CERTIFICATE") => Ok(()),
        _ => Err(format!(
            "<{tag}> does not hold PEM certificates (-----BEGIN CERTIFICATE-----)"
        )),
    }
}

/// `text` must be one unencrypted PEM private key.
pub(crate) fn check_key(text: &str) -> std::result::Result<(), String> {
    let encrypted = || {
        "the <key> is protected by a passphrase, which Gatehouse cannot ask for; decrypt it with `openssl pkey -in KEY.pem -out PLAIN.pem`, paste PLAIN.pem into <key> and import again"
            .to_string()
    };
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(encrypted());
    }
    match pem::parse(text) {
        Ok(p)
            if matches!(
                p.tag(),
                "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY"
            ) =>
        {
            Ok(())
        }
        Ok(p) if p.tag() == "ENCRYPTED PRIVATE KEY" => Err(encrypted()),
        _ => Err("<key> does not hold a PEM private key (-----BEGIN PRIVATE KEY-----)".into()),
    }
}
