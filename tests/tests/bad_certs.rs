//! The bad-certificate matrix (issue 14) against a real `gatehoused`: the stock OpenVPN 2.6
//! client over UDP (every case) and TCP (a few) and strongSwan's `charon-cmd` over IKEv2
//! (every case) present client certificates that are revoked, expired, not yet valid, from a
//! foreign CA, without clientAuth, a CA certificate, self-signed, RSA-1024 or signed with
//! SHA-1; each is refused with `client refused ... reason=` naming what is wrong. A chain
//! through an intermediate CA made with `gatehouse-certs issue-intermediate` (whose CRL
//! `gatehouse-certs` keeps in `crl.pem` beside the root's) is accepted on both protocols, and a
//! client under that intermediate that `gatehouse-certs revoke` revoked is refused as revoked.
//!
//! One topology (tag `bc`, 10.250.205.0/24 + 10.251.205.0/24), one namespace per client, all
//! clients at once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::gatehoused::{
    CONNECTED, Gatehoused, GatewayDir, LogEvent, REFUSED, certs_cli, issue_rsa_client,
};
use gatehouse_tests::openvpn::{CertFiles, ClientConfig, Proto, spawn_openvpn};
use gatehouse_tests::strongswan::{CharonCmd, CharonCmdConfig};
use gatehouse_tests::{GatewayTopology, Proc, require_commands, require_root};

/// How long every client gets for its verdict.
const VERDICT_WINDOW: Duration = Duration::from_secs(25);

/// A client certificate of the matrix and the words its refusal must carry (`None`: accepted).
struct Cert {
    name: &'static str,
    /// Certificate file (for `viainter`: the leaf, then the intermediate).
    cert: PathBuf,
    /// The leaf alone (charon-cmd takes one certificate per file).
    leaf: PathBuf,
    key: PathBuf,
    refused: Option<&'static [&'static str]>,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl")?;
    ensure!(
        out.status.success(),
        "`openssl {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

const CLIENT_EXT: &str = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n";

/// `openssl req` a key of `bits` and CSR for CN=`name`, then `openssl x509 -req` it with
/// the issuer's certificate and key, extensions `ext` and `extra` arguments (e.g. `-sha1`); returns (cert, key).
fn openssl_issue(
    dir: &Path,
    name: &str,
    bits: u32,
    (ca, ca_key): (&Path, &Path),
    ext: &str,
    extra: &[&str],
    serial: u32,
) -> Result<(PathBuf, PathBuf)> {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let cert = dir.join(format!("{name}.crt"));
    let extfile = dir.join(format!("{name}.ext"));
    std::fs::write(&extfile, ext)?;
    let p = |p: &Path| p.display().to_string();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            &format!("rsa:{bits}"),
            "-nodes",
            "-keyout",
            &p(&key),
            "-subj",
            &format!("/CN={name}"),
            "-out",
            &p(&csr),
        ],
    )?;
    let serial = format!("0x{serial:x}");
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(ca),
        "-CAkey",
        &p(ca_key),
        "-set_serial",
        &serial,
        "-days",
        "30",
        "-extfile",
        &p(&extfile),
        "-out",
        &p(&cert),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl(dir, &args)?;
    Ok((cert, key))
}

/// Every certificate of the matrix, issued in `dir` for the gateway whose PKI is `pki`.
fn make_certs(dir: &Path, pki: &Path) -> Result<Vec<Cert>> {
    let ca = pki.join("ca.crt");
    let ca_key = pki.join("ca.key");
    let mut out = Vec::new();
    let mut push = |name, (cert, key): (PathBuf, PathBuf), refused| {
        out.push(Cert {
            name,
            leaf: cert.clone(),
            cert,
            key,
            refused,
        })
    };
    push(
        "revoked",
        issue_rsa_client(dir, pki, "revoked", &[])?,
        Some(&["revoked"][..]),
    );
    certs_cli(pki, &["revoke", "revoked"])?;
    push(
        "expired",
        issue_rsa_client(
            dir,
            pki,
            "expired",
            &[
                "--not-before",
                "2020-01-01T00:00:00Z",
                "--not-after",
                "2020-02-01T00:00:00Z",
            ],
        )?,
        Some(&["expired"]),
    );
    push(
        "notyet",
        issue_rsa_client(
            dir,
            pki,
            "notyet",
            &[
                "--not-before",
                "2036-01-01T00:00:00Z",
                "--not-after",
                "2037-01-01T00:00:00Z",
            ],
        )?,
        Some(&["not yet valid"]),
    );
    let other = dir.join("other-pki");
    certs_cli(&other, &["init-ca", "--name", "Some Other CA"])?;
    push(
        "foreign",
        issue_rsa_client(dir, &other, "foreign", &[])?,
        Some(&["unknown issuer", "foreign ca"]),
    );
    push(
        "wrongeku",
        openssl_issue(
            dir,
            "wrongeku",
            2048,
            (&ca, &ca_key),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
            &[],
            0x7001,
        )?,
        Some(&["extended key usage", "eku"]),
    );
    push(
        "caclient",
        openssl_issue(
            dir,
            "caclient",
            2048,
            (&ca, &ca_key),
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature,keyCertSign\nextendedKeyUsage=clientAuth\n",
            &[],
            0x7002,
        )?,
        Some(&["ca certificate used as a client"]),
    );
    {
        let key = dir.join("selfsigned.key");
        let cert = dir.join("selfsigned.crt");
        let p = |p: &Path| p.display().to_string();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &p(&key),
                "-subj",
                "/CN=selfsigned",
                "-days",
                "30",
                "-addext",
                "basicConstraints=CA:FALSE",
                "-addext",
                "extendedKeyUsage=clientAuth",
                "-out",
                &p(&cert),
            ],
        )?;
        push("selfsigned", (cert, key), Some(&["self-signed"]));
    }
    push(
        "rsa1024",
        openssl_issue(
            dir,
            "rsa1024",
            1024,
            (&ca, &ca_key),
            CLIENT_EXT,
            &[],
            0x7003,
        )?,
        Some(&["rsa key too small", "1024 bits"]),
    );
    push(
        "sha1",
        openssl_issue(
            dir,
            "sha1",
            2048,
            (&ca, &ca_key),
            CLIENT_EXT,
            &["-sha1"],
            0x7004,
        )?,
        Some(&["sha-1"]),
    );
    // An intermediate CA under the gateway's root and clients under it: `gatehouse-certs`
    // adds the intermediate's CRL to crl.pem (with a CRL in force every certificate of the
    // chain needs a revocation status) and lists there what the intermediate revoked.
    certs_cli(pki, &["issue-intermediate", "inter", "--days", "30"])?;
    for (name, refused) in [("viainter", None), ("interrevoked", Some(&["revoked"][..]))] {
        // `-o` writes the chain a client sends: its certificate, then the intermediate.
        let (chain, key) = issue_rsa_client(dir, pki, name, &["--ca", "inter"])?;
        let text = std::fs::read_to_string(&chain)?;
        let end = "-----END CERTIFICATE-----";
        ensure!(
            text.matches(end).count() == 2,
            "issue-client --ca -o wrote no chain of two certificates:\n{text}"
        );
        let leaf = dir.join(format!("{name}-leaf.crt"));
        std::fs::write(
            &leaf,
            format!("{}\n", &text[..text.find(end).unwrap_or(0) + end.len()]),
        )?;
        if refused.is_some() {
            certs_cli(pki, &["revoke", name])?;
        }
        out.push(Cert {
            name,
            cert: chain,
            leaf,
            key,
            refused,
        });
    }
    Ok(out)
}

/// One client of the run: which case, over what, from which namespace.
struct Run {
    case: usize,
    transport: &'static str,
    client: usize,
    _proc: Option<Proc>,
    _cmd: Option<CharonCmd>,
    log: PathBuf,
}

#[test]
fn bad_certificate_matrix() -> Result<()> {
    let started = Instant::now();
    require_root();
    require_commands(&["ip", "openssl", "openvpn", "charon-cmd"]);
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let tcp_cases = [
        "revoked",
        "caclient",
        "rsa1024",
        "sha1",
        "viainter",
        "interrevoked",
    ];
    let pki_tmp = dir.join("certs");
    std::fs::create_dir_all(&pki_tmp)?;

    // UDP: every case; TCP: a few; IKEv2: every case.
    let n_certs = 11;
    let n_clients = n_certs * 2 + tcp_cases.len();
    let topo = GatewayTopology::new("bc", 205, n_clients)?;
    let gw_dir = GatewayDir::for_topology(&dir.join("gateway"), &topo, "ghd205")?;
    let pki = gw_dir.pki();
    let certs = make_certs(&pki_tmp, &pki)?;
    ensure!(certs.len() == n_certs);
    let gw = Gatehoused::start(&topo.gateway, &gw_dir, &dir.join("gatehoused.log"))?;
    let ca = gw_dir.ca_cert();

    let mut runs = Vec::new();
    let mut next = 0;
    for (i, c) in certs.iter().enumerate() {
        for proto in [Proto::Udp, Proto::Tcp] {
            if proto == Proto::Tcp && !tcp_cases.contains(&c.name) {
                continue;
            }
            let (port, transport) = match proto {
                Proto::Udp => (1194, "udp"),
                Proto::Tcp => (443, "tcp"),
            };
            let mut config = ClientConfig::new(
                proto,
                topo.client(next).gateway_addr,
                port,
                CertFiles {
                    ca: ca.clone(),
                    cert: c.cert.clone(),
                    key: c.key.clone(),
                },
            );
            config.dev = format!("tun{next}");
            // OpenSSL 3 itself refuses to load an RSA-1024 or SHA-1 client certificate at
            // its default security level: lower it, so the gateway is what refuses.
            config.extra.push("tls-cert-profile insecure".into());
            config.extra.push("tls-cipher DEFAULT:@SECLEVEL=0".into());
            let path = dir.join(format!("{}-{transport}.conf", c.name));
            config.write(&path)?;
            let log = dir.join(format!("openvpn-{}-{transport}.log", c.name));
            let proc = spawn_openvpn(&topo.client(next).ns, &path, &[], &log)?;
            runs.push(Run {
                case: i,
                transport,
                client: next,
                _proc: Some(proc),
                _cmd: None,
                log,
            });
            next += 1;
        }
        let mut config = CharonCmdConfig::new(
            topo.client(next).gateway_addr,
            &format!("CN={}", c.name),
            &ca,
            &c.leaf,
            &c.key,
        );
        if c.cert != c.leaf {
            config
                .extra_certs
                .push(pki.join("intermediate").join("inter.crt"));
        }
        let cmd_dir = dir.join(format!("charon-{}", c.name));
        let cmd = CharonCmd::spawn(&topo.client(next).ns, &cmd_dir, &config)?;
        runs.push(Run {
            case: i,
            transport: "ikev2",
            client: next,
            _proc: None,
            log: cmd.log_path().to_path_buf(),
            _cmd: Some(cmd),
        });
        next += 1;
    }

    // Every client's verdict: the gateway's refusal or connection from its address.
    let deadline = Instant::now() + VERDICT_WINDOW;
    let mut verdicts: BTreeMap<usize, (&str, LogEvent)> = BTreeMap::new();
    while verdicts.len() < runs.len() && Instant::now() < deadline {
        let refused = gw.events(REFUSED);
        let connected = gw.events(CONNECTED);
        for (k, r) in runs.iter().enumerate() {
            if verdicts.contains_key(&k) {
                continue;
            }
            let from = topo.client(r.client).addr;
            if let Some(e) = refused.iter().find(|e| e.remote_is(from)) {
                verdicts.insert(k, ("refused", e.clone()));
            } else if let Some(e) = connected.iter().find(|e| e.remote_is(from)) {
                verdicts.insert(k, ("connected", e.clone()));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut failures = Vec::new();
    let mut table = String::new();
    for (k, r) in runs.iter().enumerate() {
        let c = &certs[r.case];
        let (outcome, reason, client) = match verdicts.get(&k) {
            Some((o, e)) => (
                *o,
                e.field("reason").unwrap_or_default().to_string(),
                e.field("client").unwrap_or_default().to_string(),
            ),
            None => ("no verdict", String::new(), String::new()),
        };
        let verdict = format!("{outcome} client={client} reason={reason}");
        let _ = writeln!(table, "{:<10} {:<6} {verdict}", c.name, r.transport);
        let ok = match c.refused {
            None => outcome == "connected",
            Some(words) => {
                let lower = reason.to_lowercase();
                outcome == "refused" && words.iter().all(|w| lower.contains(w)) && client == c.name
            }
        };
        if !ok {
            let log = std::fs::read_to_string(&r.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            failures.push(format!(
                "--- {} over {}: expected {:?}, got {verdict}\nclient log {}:\n{}",
                c.name,
                r.transport,
                c.refused,
                r.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    eprintln!("{table}");
    ensure!(gw.is_running(), "gatehoused died:\n{}", gw.log_tail(30));
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        bail!(
            "{}\ngatehoused log:\n{}",
            failures.join("\n"),
            gw.log_tail(40)
        );
    }
    drop(runs);
    drop(gw);
    drop(topo);
    Ok(())
}
