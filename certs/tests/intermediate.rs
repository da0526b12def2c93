//! Intermediate CAs through the `gatehouse-certs` binary (`issue-intermediate`, `issue-client
//! --ca`, `revoke`, `crl`, `export`), checked by an independent implementation: the
//! `openssl` command-line tool (chain and CRL verification, certificate text, PKCS#12).

// Test helpers outside #[test] functions: a panic is the right failure here.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gatehouse_certs::Profile;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse-certs");
const OPENSSL: &str = "/usr/bin/openssl";

/// A temporary folder with a PKI `pki` (root CA made) inside.
struct Env {
    tmp: tempfile::TempDir,
    pki: PathBuf,
}

impl Env {
    fn with_ca() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let pki = tmp.path().join("pki");
        let env = Env { tmp, pki };
        env.ok(&["init-ca"]);
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn run_in(&self, pki: &Path, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--pki")
            .arg(pki)
            .args(args)
            .current_dir(self.tmp.path())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run_in(&self.pki, args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Expects a one-line `error: ...`, exit status 1, and no change in the PKI folder.
    fn fails(&self, args: &[&str]) -> String {
        let before = snapshot(&self.pki);
        let out = self.run_in(&self.pki, args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.trim_end().lines().count() == 1,
            "{args:?}: not a one-line error: {stderr:?}"
        );
        assert_eq!(
            before,
            snapshot(&self.pki),
            "{args:?} changed the PKI folder"
        );
        stderr
    }

    /// The serial `list --json` shows for `name` (its newest certificate).
    fn serial(&self, name: &str) -> String {
        let list: serde_json::Value = serde_json::from_str(&self.ok(&["list", "--json"])).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|r| r["name"] == name)
            .map(|r| r["serial"].as_str().unwrap().to_string())
            .unwrap()
    }

    /// The key file `issue-*` printed.
    fn key_of(&self, name: &str) -> PathBuf {
        self.pki
            .join("private")
            .join(format!("{}.key", self.serial(name)))
    }
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let mode = mode(&path);
            if path.is_dir() {
                out.push((path.clone(), mode, Vec::new()));
                stack.push(path);
            } else {
                out.push((path.clone(), mode, fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs openssl; returns (success, stdout + stderr).
fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new(OPENSSL).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The PEM certificate blocks of `text`, in order.
fn cert_blocks(text: &str) -> Vec<String> {
    pem::parse_many(text)
        .unwrap()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| pem::encode(&p))
        .collect()
}

/// The issuer of each CRL in `crl.pem`, as `openssl crl` prints it.
fn crl_issuers(env: &Env, crl: &Path) -> Vec<String> {
    let text = fs::read_to_string(crl).unwrap();
    pem::parse_many(&text)
        .unwrap()
        .into_iter()
        .filter(|p| p.tag() == "X509 CRL")
        .map(|p| {
            let one = env.path("one.crl");
            fs::write(&one, pem::encode(&p)).unwrap();
            let (ok, out) = openssl(&["crl", "-in", s(&one), "-noout", "-issuer"]);
            assert!(ok, "{out}");
            out.trim().to_string()
        })
        .collect()
}

/// `openssl verify` of `leaf` against the root with `untrusted` intermediates and every
/// CRL of `crl` checked for every certificate of the chain.
fn verify(env: &Env, leaf: &Path, untrusted: &Path) -> (bool, String) {
    let ca = env.pki.join("ca.crt");
    let crl = env.pki.join("crl.pem");
    openssl(&[
        "verify",
        "-crl_check_all",
        "-CRLfile",
        s(&crl),
        "-CAfile",
        s(&ca),
        "-untrusted",
        s(untrusted),
        s(leaf),
    ])
}

#[test]
fn intermediate_ca_is_a_pathlen_0_ca_under_the_root_with_its_own_crl() {
    let env = Env::with_ca();
    let out = env.ok(&["issue-intermediate", "branch", "--days", "400"]);
    assert!(
        out.contains("issued intermediate certificate branch"),
        "{out}"
    );
    let crt = env.pki.join("intermediate/branch.crt");
    let key = env.key_of("branch");
    assert!(out.contains(s(&crt)) && out.contains(s(&key)), "{out}");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&env.pki.join("private")), 0o700);

    let (ok, text) = openssl(&["x509", "-in", s(&crt), "-noout", "-text"]);
    assert!(ok, "{text}");
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "Issuer: CN = Gatehouse Root CA",
        "Subject: CN = branch",
        "X509v3 Basic Constraints: critical CA:TRUE, pathlen:0",
        "X509v3 Key Usage: critical Certificate Sign, CRL Sign",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(flat.contains(want), "missing {want:?} in\n{text}");
    }
    // Its key is the certificate's.
    let (_, cert_pub) = openssl(&["x509", "-in", s(&crt), "-noout", "-pubkey"]);
    let (_, key_pub) = openssl(&["pkey", "-in", s(&key), "-pubout"]);
    assert_eq!(cert_pub, key_pub);
    // Chains to the root; crl.pem holds the root's CRL, then the intermediate's.
    let (ok, text) = verify(&env, &crt, &crt);
    assert!(ok, "{text}");
    assert_eq!(
        crl_issuers(&env, &env.pki.join("crl.pem")),
        ["issuer=CN = Gatehouse Root CA", "issuer=CN = branch"]
    );
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    assert_eq!(list[0]["kind"], "intermediate");
    assert_eq!(list[0]["issuer"], "root");
    let table = env.ok(&["list"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("branch ") && l.contains(" intermediate ")),
        "{table}"
    );
}

#[test]
fn clients_under_an_intermediate_chain_through_it_and_its_crl_revokes_them() {
    let env = Env::with_ca();
    env.ok(&["issue-intermediate", "branch"]);
    env.ok(&["issue-client", "bob"]);
    let alice_crt = env.path("alice.crt");
    let out = env.ok(&[
        "issue-client",
        "alice",
        "--ca",
        "branch",
        "-o",
        s(&alice_crt),
    ]);
    assert!(out.contains("issued by intermediate CA branch"), "{out}");
    // -o writes the chain to send: the client certificate, then the intermediate.
    let chain = cert_blocks(&fs::read_to_string(&alice_crt).unwrap());
    let inter = fs::read_to_string(env.pki.join("intermediate/branch.crt")).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], cert_blocks(&inter)[0]);
    let leaf = env.path("alice-leaf.crt");
    fs::write(&leaf, &chain[0]).unwrap();
    let (_, text) = openssl(&[
        "x509",
        "-in",
        s(&leaf),
        "-noout",
        "-issuer",
        "-ext",
        "extendedKeyUsage",
    ]);
    assert!(
        text.contains("issuer=CN = branch") && text.contains("TLS Web Client Authentication"),
        "{text}"
    );
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    let alice = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "alice")
        .unwrap();
    assert_eq!(alice["issuer"], "branch");

    let inter_path = env.pki.join("intermediate/branch.crt");
    let (ok, text) = verify(&env, &leaf, &inter_path);
    assert!(ok, "alice before revocation: {text}");
    // Without the intermediate there is no chain.
    let (ok, _) = openssl(&["verify", "-CAfile", s(&env.pki.join("ca.crt")), s(&leaf)]);
    assert!(!ok, "the leaf must not verify against the root alone");

    // Revoking alice lands in the intermediate's CRL, not the root's.
    let out = env.ok(&["revoke", "alice", "--reason", "key-compromise"]);
    assert!(out.contains("revoked client certificate alice"), "{out}");
    let (ok, text) = verify(&env, &leaf, &inter_path);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let crl = fs::read_to_string(env.pki.join("crl.pem")).unwrap();
    let blocks: Vec<pem::Pem> = pem::parse_many(&crl).unwrap();
    assert_eq!(blocks.len(), 2, "{crl}");
    let serial = env.serial("alice").to_uppercase();
    let mut listed = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let one = env.path(&format!("crl{i}.pem"));
        fs::write(&one, pem::encode(b)).unwrap();
        let (_, text) = openssl(&["crl", "-in", s(&one), "-noout", "-text"]);
        listed.push(text.to_uppercase().contains(&serial));
        // Each CRL is signed by the CA it names.
        let signer = if i == 0 {
            env.pki.join("ca.crt")
        } else {
            inter_path.clone()
        };
        let (ok, text) = openssl(&["crl", "-in", s(&one), "-noout", "-CAfile", s(&signer)]);
        assert!(ok && text.contains("verify OK"), "CRL {i}: {text}");
    }
    assert_eq!(
        listed,
        [false, true],
        "alice only in the intermediate's CRL"
    );

    // bob (root-issued) is unaffected; `crl` re-signs both CRLs and keeps alice listed.
    env.ok(&["crl"]);
    let (ok, text) = verify(&env, &leaf, &inter_path);
    assert!(
        !ok && text.contains("certificate revoked"),
        "after crl: {text}"
    );

    // Revoking the intermediate puts it on the root's CRL and stops signing its CRL; no
    // more clients under it.
    let c2 = env.path("carol.crt");
    env.ok(&["issue-client", "carol", "--ca", "branch", "-o", s(&c2)]);
    env.ok(&["revoke", "branch"]);
    assert_eq!(
        crl_issuers(&env, &env.pki.join("crl.pem")),
        ["issuer=CN = Gatehouse Root CA", "issuer=CN = branch"],
        "the revoked intermediate's last CRL stays (nothing signs a newer one)"
    );
    let (ok, text) = verify(&env, &c2, &c2);
    assert!(
        !ok && text.contains("revoked"),
        "carol under a revoked CA: {text}"
    );
    let err = env.fails(&["issue-client", "dave", "--ca", "branch"]);
    assert!(
        err.contains("no valid intermediate CA named \"branch\""),
        "{err}"
    );
}

#[test]
fn exports_of_a_client_under_an_intermediate_carry_the_chain() {
    let env = Env::with_ca();
    env.ok(&["issue-intermediate", "branch"]);
    env.ok(&["issue-client", "alice", "--ca", "branch"]);
    let inter = cert_blocks(&fs::read_to_string(env.pki.join("intermediate/branch.crt")).unwrap())
        .remove(0);

    // .ovpn: <cert> holds the client certificate, then the intermediate.
    let ovpn = env.path("alice.ovpn");
    env.ok(&[
        "export",
        "alice",
        "--gateway",
        "vpn.example.com",
        "--format",
        "ovpn",
        "-o",
        s(&ovpn),
    ]);
    assert_eq!(mode(&ovpn), 0o600);
    let text = fs::read_to_string(&ovpn).unwrap();
    let cert = text
        .split("<cert>")
        .nth(1)
        .unwrap()
        .split("</cert>")
        .next()
        .unwrap();
    let blocks = cert_blocks(cert);
    assert_eq!(blocks.len(), 2, "{cert}");
    assert_eq!(blocks[1], inter);
    let chain = env.path("ovpn-chain.pem");
    fs::write(&chain, cert).unwrap();
    let (ok, out) = verify(&env, &chain, &chain);
    assert!(ok, "the .ovpn's <cert> chains to its <ca>: {out}");

    // Gatehouse profile: `cert` is the same chain.
    let profile_path = env.path("alice.toml");
    env.ok(&[
        "export",
        "alice",
        "--gateway",
        "vpn.example.com",
        "--format",
        "gatehouse",
        "-o",
        s(&profile_path),
    ]);
    let profile = Profile::from_toml(&fs::read_to_string(&profile_path).unwrap()).unwrap();
    assert_eq!(cert_blocks(&profile.cert), blocks);

    // PKCS#12: client certificate, intermediate and root.
    let p12 = env.path("alice.p12");
    env.ok(&[
        "export",
        "alice",
        "--gateway",
        "vpn.example.com",
        "--format",
        "pkcs12",
        "--password",
        "pw",
        "-o",
        s(&p12),
    ]);
    let (ok, out) = openssl(&["pkcs12", "-in", s(&p12), "-passin", "pass:pw", "-nokeys"]);
    assert!(ok, "{out}");
    let subjects: Vec<&str> = out.lines().filter(|l| l.starts_with("subject=")).collect();
    assert_eq!(
        subjects,
        [
            "subject=CN = alice",
            "subject=CN = branch",
            "subject=CN = Gatehouse Root CA"
        ],
        "{out}"
    );

    // swanctl: the intermediate is among the CA certificates charon loads (and sends).
    let swan = env.path("alice-swanctl");
    env.ok(&[
        "export",
        "alice",
        "--gateway",
        "vpn.example.com",
        "--format",
        "swanctl",
        "-o",
        s(&swan),
    ]);
    let loaded =
        cert_blocks(&fs::read_to_string(swan.join("x509ca/gatehouse-intermediate.pem")).unwrap());
    assert_eq!(loaded, [inter]);
    assert_eq!(
        cert_blocks(&fs::read_to_string(swan.join("x509/alice.pem")).unwrap()).len(),
        1
    );

    // A root-issued client's exports carry no intermediate.
    env.ok(&["issue-client", "bob"]);
    let bob = env.path("bob.ovpn");
    env.ok(&[
        "export",
        "bob",
        "--gateway",
        "vpn.example.com",
        "--format",
        "ovpn",
        "-o",
        s(&bob),
    ]);
    let text = fs::read_to_string(&bob).unwrap();
    let cert = text
        .split("<cert>")
        .nth(1)
        .unwrap()
        .split("</cert>")
        .next()
        .unwrap();
    assert_eq!(cert_blocks(cert).len(), 1);
    let swan = env.path("bob-swanctl");
    env.ok(&[
        "export",
        "bob",
        "--gateway",
        "vpn.example.com",
        "--format",
        "swanctl",
        "-o",
        s(&swan),
    ]);
    assert!(!swan.join("x509ca/gatehouse-intermediate.pem").exists());
}

#[test]
fn crls_of_other_issuers_in_crl_pem_survive_revocations() {
    let env = Env::with_ca();
    env.ok(&["issue-intermediate", "branch"]);
    // Another CA's CRL, appended by hand (as for an intermediate made with openssl).
    let other = env.path("other-pki");
    let out = env.run_in(&other, &["init-ca", "--name", "Elsewhere CA"]);
    assert!(out.status.success());
    let foreign = fs::read_to_string(other.join("crl.pem")).unwrap();
    let crl_path = env.pki.join("crl.pem");
    let mut both = fs::read_to_string(&crl_path).unwrap();
    both.push_str(&foreign);
    fs::write(&crl_path, both).unwrap();

    env.ok(&["issue-client", "alice", "--ca", "branch"]);
    env.ok(&["revoke", "alice"]);
    env.ok(&["crl"]);
    assert_eq!(
        crl_issuers(&env, &crl_path),
        [
            "issuer=CN = Gatehouse Root CA",
            "issuer=CN = branch",
            "issuer=CN = Elsewhere CA"
        ]
    );
    let kept = pem::parse_many(fs::read_to_string(&crl_path).unwrap()).unwrap();
    assert_eq!(
        kept[2].contents(),
        pem::parse(&foreign).unwrap().contents(),
        "kept byte for byte"
    );
}

#[test]
fn intermediate_mistakes_are_one_line_errors_that_change_nothing() {
    let env = Env::with_ca();
    env.ok(&["issue-intermediate", "branch"]);
    env.ok(&["issue-client", "bob"]);
    let err = env.fails(&["issue-client", "alice", "--ca", "nope"]);
    assert!(err.contains("issue-intermediate nope"), "{err}");
    // A client certificate is not a CA.
    let err = env.fails(&["issue-client", "alice", "--ca", "bob"]);
    assert!(
        err.contains("no valid intermediate CA named \"bob\""),
        "{err}"
    );
    // Names are shared with every other valid certificate.
    let err = env.fails(&["issue-intermediate", "bob"]);
    assert!(err.contains("already exists"), "{err}");
    let err = env.fails(&["issue-intermediate", "a/b"]);
    assert!(err.contains("invalid certificate name"), "{err}");
    let err = env.fails(&[
        "export",
        "branch",
        "--gateway",
        "vpn.example.com",
        "--format",
        "ovpn",
        "-o",
        "x.ovpn",
    ]);
    assert!(err.contains("branch is an intermediate CA"), "{err}");
    let err = env.fails(&[
        "issue-intermediate",
        "old",
        "--not-after",
        "2020-01-01T00:00:00Z",
        "--not-before",
        "2019-01-01T00:00:00Z",
    ]);
    assert!(err.contains("invalid validity"), "{err}");
}

#[test]
fn an_intermediate_never_outlives_the_root() {
    let env = Env::with_ca();
    env.ok(&["issue-intermediate", "long", "--days", "99999"]);
    let (_, root_end) = openssl(&[
        "x509",
        "-in",
        s(&env.pki.join("ca.crt")),
        "-noout",
        "-enddate",
    ]);
    let (_, end) = openssl(&[
        "x509",
        "-in",
        s(&env.pki.join("intermediate/long.crt")),
        "-noout",
        "-enddate",
    ]);
    assert_eq!(end, root_end);
}
