//! A throwaway PKI made with the `openssl` CLI, for tests of the stock OpenVPN peers that must
//! not depend on `gatehouse-certs`: ECDSA P-256 CA, a server certificate (serverAuth EKU,
//! keyUsage digitalSignature, as `remote-cert-tls server` demands) and a client certificate
//! (clientAuth).

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::openvpn::CertFiles;

/// The server's and the client's credentials, both chaining to one CA.
#[derive(Clone, Debug)]
pub struct OpensslPki {
    pub server: CertFiles,
    pub client: CertFiles,
}

const EXTENSIONS: &str = "\
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

impl OpensslPki {
    /// Writes `ca.crt`, `server.{crt,key}` and `client.{crt,key}` into `dir`. The server
    /// certificate names `server_ips` as IP SANs. Valid for two days.
    pub fn create(dir: &Path, server_ips: &[Ipv4Addr]) -> Result<OpensslPki> {
        fs::create_dir_all(dir)?;
        let mut ext = EXTENSIONS.to_string();
        if !server_ips.is_empty() {
            let sans: Vec<String> = server_ips.iter().map(|ip| format!("IP:{ip}")).collect();
            // Into the [server] section, right after its EKU.
            ext = ext.replace(
                "extendedKeyUsage = serverAuth\n",
                &format!(
                    "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:server, {}\n",
                    sans.join(", ")
                ),
            );
        }
        fs::write(dir.join("ext.cnf"), ext)?;

        genkey(dir, "ca.key")?;
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=gatehouse-test-ca",
                "-out",
                "ca.csr",
            ],
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "ca.csr",
                "-signkey",
                "ca.key",
                "-days",
                "2",
                "-sha256",
                "-extfile",
                "ext.cnf",
                "-extensions",
                "ca",
                "-out",
                "ca.crt",
            ],
        )?;
        for name in ["server", "client"] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let crt = format!("{name}.crt");
            genkey(dir, &key)?;
            openssl(
                dir,
                &[
                    "req",
                    "-new",
                    "-key",
                    &key,
                    "-subj",
                    &format!("/CN={name}"),
                    "-out",
                    &csr,
                ],
            )?;
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-sha256",
                    "-extfile",
                    "ext.cnf",
                    "-extensions",
                    name,
                    "-out",
                    &crt,
                ],
            )?;
            openssl(dir, &["verify", "-CAfile", "ca.crt", &crt])?;
        }
        let files = |name: &str| CertFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        Ok(OpensslPki {
            server: files("server"),
            client: files("client"),
        })
    }
}

fn genkey(dir: &Path, out: &str) -> Result<()> {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            out,
        ],
    )?;
    Ok(())
}

fn openssl(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!(
            "`openssl {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
