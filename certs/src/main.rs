//! `gatehouse-certs`: the admin CLI over the PKI library.
//!
//! Every failure prints one line, `error: <what to do>`, on stderr and exits with status 1.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gatehouse_certs::{CaOptions, CertRecord, Format, Issued, Pki, Reason, Validity, rfc3339};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Gatehouse PKI: root CA, gateway and client certificates, revocation, client exports.
#[derive(Debug, Parser)]
#[command(name = "gatehouse-certs", version)]
struct Cli {
    /// The PKI folder (created by `init-ca`).
    #[arg(long, value_name = "DIR")]
    pki: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the root CA (ECDSA P-256) in DIR.
    InitCa {
        /// Common name of the CA.
        #[arg(long, value_name = "N")]
        name: Option<String>,
        /// Lifetime in days [default: 3650].
        #[arg(long, value_name = "D")]
        days: Option<u32>,
    },
    /// Issue a gateway certificate (serverAuth + ikeIntermediate); writes server/<N>.crt/.key.
    IssueServer {
        /// Name of the gateway (certificate CN and file name).
        #[arg(long, value_name = "N")]
        name: String,
        /// DNS names or IP addresses the gateway is reached at.
        #[arg(long, value_name = "HOST_OR_IP", num_args = 1.., required = true)]
        san: Vec<String>,
        #[command(flatten)]
        validity: ValidityArgs,
    },
    /// Create an intermediate CA under the root (CA:TRUE pathlen:0, keyCertSign + cRLSign):
    /// writes intermediate/<NAME>.crt and its key (0600) and adds its CRL to crl.pem. Issue
    /// clients under it with `issue-client NAME --ca <intermediate>`.
    IssueIntermediate {
        /// Name of the intermediate CA (certificate CN, and what `--ca` names).
        name: String,
        /// Lifetime in days [default: 1825, never beyond the root's not-after].
        #[arg(long, value_name = "D")]
        days: Option<u32>,
        /// Exact start of validity (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        not_before: Option<String>,
        /// Exact end of validity (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        not_after: Option<String>,
    },
    /// Issue a client certificate (clientAuth), with a new key or from a CSR.
    IssueClient {
        /// Name of the client (certificate CN).
        name: String,
        /// Sign with this intermediate CA (made by `issue-intermediate`) instead of the root;
        /// exports then carry the intermediate after the client certificate.
        #[arg(long, value_name = "INTERMEDIATE")]
        ca: Option<String>,
        /// Certify the public key of this PKCS#10 request (PEM or DER); no key is stored.
        #[arg(long, value_name = "FILE")]
        csr: Option<PathBuf>,
        /// Also write the certificate (PEM) here - the way to hand a CSR-issued certificate
        /// back to its device. With --ca the intermediate follows it (the chain to send).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        validity: ValidityArgs,
    },
    /// List issued certificates.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Issue a WireGuard identity for a stock WireGuard app: a keypair and an address of the
    /// gateway's client pool reserved for it (the highest free one unless --address), read
    /// from gateway.toml next to the PKI folder. Export it with `export NAME --format
    /// wireguard`.
    IssueWireguard {
        /// Name of the client.
        name: String,
        /// Its address in `client_pool`.
        #[arg(long, value_name = "IP")]
        address: Option<std::net::Ipv4Addr>,
    },
    /// Revoke a certificate and rewrite crl.pem, or revoke a WireGuard identity (the
    /// gateway removes the peer within seconds).
    Revoke {
        /// Certificate name (its valid certificate) or serial (hex).
        name_or_serial: String,
        /// unspecified | key-compromise | ca-compromise | affiliation-changed | superseded |
        /// cessation-of-operation
        #[arg(long, value_name = "R", default_value = "unspecified")]
        reason: String,
    },
    /// Create the tls-crypt-v2 server key (tls-crypt-v2-server.key, 0600) if missing. From
    /// then on `export --format ovpn` writes each client's own <tls-crypt-v2> key into its
    /// profile; gatehoused requires them with `tls_crypt_v2 = "on"` under [openvpn].
    TlsCryptV2Server,
    /// Sign a fresh CRL into crl.pem and print it (or write it to FILE).
    Crl {
        /// Also write the CRL here instead of printing it.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Export a client certificate with its key for a client.
    Export {
        /// Name of the client certificate.
        name: String,
        /// Host name or IP address clients connect to (for swanctl: the one the gateway
        /// certificate was issued for, its IKE identity).
        #[arg(long, value_name = "HOST")]
        gateway: String,
        /// gatehouse | ovpn | pkcs12 | swanctl (a strongSwan folder usable as SWANCTL_DIR:
        /// swanctl.conf, x509ca/, x509/, private/) | mobileconfig (Apple profile for the
        /// built-in IKEv2 client; needs --password) | windows (PowerShell script for the
        /// built-in IKEv2 client of Windows 10/11) | wireguard (wg-quick configuration of a
        /// WireGuard identity; see issue-wireguard)
        #[arg(long, value_name = "FORMAT")]
        format: String,
        /// Password protecting the PKCS#12 file (also the one inside a mobileconfig or
        /// windows export, which asks for it on the device) [default: empty].
        #[arg(long, value_name = "P")]
        password: Option<String>,
        /// Output file (written with mode 0600: it holds a private key); for swanctl, a new
        /// or empty folder.
        #[arg(short = 'o', long = "output", value_name = "PATH")]
        output: PathBuf,
        /// `--format wireguard`: also write the configuration as a QR code (PNG, 0600) for
        /// the WireGuard phone apps.
        #[arg(long, value_name = "FILE.png")]
        qr: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct ValidityArgs {
    /// Lifetime in days [default: 825 for gateways, 365 for clients].
    #[arg(long, value_name = "D")]
    days: Option<u32>,
    /// Exact start of validity (RFC 3339), for migrations and test fixtures.
    #[arg(long, value_name = "RFC3339")]
    not_before: Option<String>,
    /// Exact end of validity (RFC 3339), for migrations and test fixtures.
    #[arg(long, value_name = "RFC3339")]
    not_after: Option<String>,
}

impl ValidityArgs {
    fn to_validity(&self) -> anyhow::Result<Validity> {
        let parse = |flag: &str, value: &Option<String>| -> anyhow::Result<_> {
            value
                .as_deref()
                .map(|v| {
                    OffsetDateTime::parse(v, &Rfc3339).with_context(|| {
                        format!("{flag} {v:?} is not an RFC 3339 time such as 2030-01-31T12:00:00Z")
                    })
                })
                .transpose()
        };
        Ok(Validity {
            days: self.days,
            not_before: parse("--not-before", &self.not_before)?,
            not_after: parse("--not-after", &self.not_after)?,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the error chain holds.
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = cli.pki.as_path();
    match cli.command {
        Command::InitCa { name, days } => {
            let defaults = CaOptions::default();
            let options = CaOptions {
                name: name.unwrap_or(defaults.name),
                days: days.unwrap_or(defaults.days),
            };
            let pki = Pki::init(dir, &options)?;
            println!(
                "created root CA {:?} in {} (ca.crt, ca.key, registry.sqlite, crl.pem)",
                options.name,
                pki.dir().display()
            );
        }
        Command::IssueServer {
            name,
            san,
            validity,
        } => {
            let validity = validity.to_validity()?;
            let mut pki = Pki::open(dir)?;
            let issued = pki.issue_server(&name, &san, &validity)?;
            print_issued(&issued);
            let (crt, key) = pki.server_cert_paths(&name);
            println!("  certificate: {}", crt.display());
            println!("  key:         {}", key.display());
        }
        Command::IssueIntermediate {
            name,
            days,
            not_before,
            not_after,
        } => {
            let validity = ValidityArgs {
                days,
                not_before,
                not_after,
            }
            .to_validity()?;
            let mut pki = Pki::open(dir)?;
            let issued = pki.issue_intermediate(&name, &validity)?;
            print_issued(&issued);
            println!(
                "  certificate: {}",
                pki.intermediate_cert_path(&name).display()
            );
            if let Some(key) = &issued.key_path {
                println!("  key:         {}", key.display());
            }
            println!(
                "  {} now also holds its CRL; issue clients under it with `gatehouse-certs --pki {} issue-client NAME --ca {name}`",
                pki.crl_path().display(),
                dir.display()
            );
        }
        Command::IssueClient {
            name,
            ca,
            csr,
            output,
            validity,
        } => {
            let validity = validity.to_validity()?;
            let csr = csr
                .map(|path| {
                    std::fs::read(&path)
                        .with_context(|| format!("cannot read CSR file {}", path.display()))
                })
                .transpose()?;
            let mut pki = Pki::open(dir)?;
            let issued =
                pki.issue_client_signed_by(&name, &validity, csr.as_deref(), ca.as_deref())?;
            print_issued(&issued);
            if let Some(ca) = &ca {
                println!("  issued by intermediate CA {ca}");
            }
            let with_chain = if issued.chain_pem.is_empty() {
                issued.cert_pem.clone()
            } else {
                format!(
                    "{}\n{}\n",
                    issued.cert_pem.trim_end(),
                    issued.chain_pem.trim_end()
                )
            };
            if let Some(path) = &output {
                write_file(path, with_chain.as_bytes(), 0o644)?;
                println!("  certificate: {}", path.display());
            }
            match &issued.key_path {
                Some(key) => println!("  key: {}", key.display()),
                None if output.is_none() => {
                    println!("  issued from a CSR (the key stays on the device); certificate:");
                    print!("{with_chain}");
                }
                None => println!("  issued from a CSR: the private key stays on the device"),
            }
        }
        Command::List { json } => {
            let pki = Pki::open(dir)?;
            let records = pki.list()?;
            let now = OffsetDateTime::now_utc();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list_json(&records, now))?
                );
            } else {
                print!("{}", list_table(&records, now));
                let wg = gatehouse_certs::wireguard::identities(dir)?;
                if !wg.is_empty() {
                    println!("\nWireGuard identities:");
                    for p in wg {
                        println!(
                            "  {:<20} {:<15} {} {}",
                            p.name,
                            p.address.to_string(),
                            p.public_key,
                            match &p.revoked {
                                Some(t) => format!("revoked {t}"),
                                None => "valid".into(),
                            }
                        );
                    }
                }
            }
        }
        Command::IssueWireguard { name, address } => {
            let now = rfc3339(OffsetDateTime::now_utc());
            let id = gatehouse_certs::wireguard::issue(dir, &name, address, &now)?;
            println!(
                "issued WireGuard identity {name}: address {}, public key {}",
                id.address, id.public_key
            );
            println!(
                "  export it with `gatehouse-certs --pki {} export {name} --gateway HOST --format wireguard -o {name}.conf [--qr {name}.png]`",
                dir.display()
            );
        }
        Command::Revoke {
            name_or_serial,
            reason,
        } if gatehouse_certs::wireguard::identities(dir)?
            .iter()
            .any(|p| p.name == name_or_serial && p.revoked.is_none()) =>
        {
            let now = rfc3339(OffsetDateTime::now_utc());
            if let Some(id) = gatehouse_certs::wireguard::revoke(dir, &name_or_serial, &now)? {
                println!(
                    "revoked WireGuard identity {} (address {}); {} updated, the gateway removes the peer within seconds",
                    id.name,
                    id.address,
                    gatehouse_certs::wireguard::registry_path(dir).display()
                );
            }
            // The same name's valid certificate goes too: `revoke NAME` cuts every access.
            if let Ok(mut pki) = Pki::open(dir)
                && pki
                    .find(&name_or_serial)
                    .is_ok_and(|r| r.revoked_at.is_none())
            {
                let reason: Reason = reason.parse()?;
                let record = pki.revoke(&name_or_serial, reason)?;
                println!(
                    "revoked {} certificate {} (serial {}, reason {reason}); {} updated",
                    record.kind,
                    record.name,
                    record.serial,
                    pki.crl_path().display()
                );
            }
        }
        Command::Revoke {
            name_or_serial,
            reason,
        } => {
            let reason: Reason = reason.parse()?;
            let mut pki = Pki::open(dir)?;
            let record = pki.revoke(&name_or_serial, reason)?;
            println!(
                "revoked {} certificate {} (serial {}, reason {reason}); {} updated",
                record.kind,
                record.name,
                record.serial,
                pki.crl_path().display()
            );
        }
        Command::TlsCryptV2Server => {
            let pki = Pki::open(dir)?;
            let (path, created) = pki.ensure_tls_crypt_v2_server_key()?;
            if created {
                println!("created the tls-crypt-v2 server key {}", path.display());
            } else {
                println!(
                    "the tls-crypt-v2 server key {} already exists",
                    path.display()
                );
            }
            println!(
                "  .ovpn exports now carry a per-client <tls-crypt-v2> key; set `tls_crypt_v2 = \"on\"` under [openvpn] in gateway.toml and restart gatehoused, then re-export every client's .ovpn"
            );
        }
        Command::Crl { output } => {
            let mut pki = Pki::open(dir)?;
            let pem = pki.write_crl()?;
            match output {
                Some(path) => write_file(&path, pem.as_bytes(), 0o644)?,
                None => std::io::stdout().write_all(pem.as_bytes())?,
            }
        }
        Command::Export {
            name,
            gateway,
            format,
            output,
            qr,
            ..
        } if format == "wireguard" => {
            let conf = gatehouse_certs::wireguard::export_config(dir, &name, &gateway)?;
            write_file(&output, conf.as_bytes(), 0o600)?;
            println!(
                "exported {name} as wireguard (wg-quick) to {}",
                output.display()
            );
            if let Some(qr) = qr {
                let png = gatehouse_certs::wireguard::qr_png(&conf)?;
                write_file(&qr, &png, 0o600)?;
                println!(
                    "  QR code in {} (it holds the private key): scan it in the WireGuard app",
                    qr.display()
                );
            }
        }
        Command::Export {
            name,
            gateway,
            format,
            password,
            output,
            qr,
        } => {
            if qr.is_some() {
                anyhow::bail!("--qr goes with `--format wireguard` only");
            }
            let format: Format = format.parse()?;
            let pki = Pki::open(dir)?;
            if format.is_folder() {
                pki.export_swanctl(&name, &gateway, &output)?;
                println!("exported {name} as {format} to {}/", output.display());
                println!(
                    "  load it with `sudo env SWANCTL_DIR={} swanctl --load-all` (or copy it into /etc/swanctl), then `swanctl --initiate --child gatehouse`",
                    output.display()
                );
            } else {
                let bytes = pki.export(&name, &gateway, format, password.as_deref())?;
                write_file(&output, &bytes, 0o600)?;
                println!("exported {name} as {format} to {}", output.display());
                match format {
                    Format::Mobileconfig => println!(
                        "  send it to the iPhone, iPad or Mac (AirDrop, mail, a download) and install it in Settings; the device asks for the PKCS#12 password"
                    ),
                    Format::Windows => println!(
                        "  on the Windows PC, in an elevated PowerShell: powershell -ExecutionPolicy Bypass -File {}",
                        output
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    ),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

fn print_issued(issued: &Issued) {
    let r = &issued.record;
    println!(
        "issued {} certificate {} (serial {}, sha256 {}, valid until {})",
        r.kind,
        r.name,
        r.serial,
        r.sha256,
        rfc3339(r.not_after)
    );
}

/// Writes an output file atomically with `mode` (0600 for anything holding a key).
fn write_file(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

fn list_json(records: &[CertRecord], now: OffsetDateTime) -> serde_json::Value {
    records
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "serial": r.serial,
                "kind": r.kind,
                "sha256": r.sha256,
                "not_before": rfc3339(r.not_before),
                "not_after": rfc3339(r.not_after),
                "status": r.status(now),
                "revoked_at": r.revoked_at.map(rfc3339),
                "reason": r.reason.map(|x| x.as_str()),
                "issuer": issuer_name(records, r),
            })
        })
        .collect()
}

/// The name of the intermediate CA that signed `r`, or "root".
fn issuer_name(records: &[CertRecord], r: &CertRecord) -> String {
    match &r.issuer {
        None => "root".to_string(),
        Some(serial) => records
            .iter()
            .find(|i| &i.serial == serial)
            .map(|i| i.name.clone())
            .unwrap_or_else(|| serial.clone()),
    }
}

fn list_table(records: &[CertRecord], now: OffsetDateTime) -> String {
    let header = ["NAME", "SERIAL", "KIND", "SHA256", "NOT AFTER", "STATUS"].map(String::from);
    let rows: Vec<[String; 6]> = records
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.serial.clone(),
                r.kind.to_string(),
                r.sha256.clone(),
                rfc3339(r.not_after),
                r.status(now).to_string(),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
