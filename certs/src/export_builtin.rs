//! Exports for the operating systems' built-in IKEv2 clients (docs/builtin-ikev2-clients.md):
//! an Apple configuration profile (`.mobileconfig`) and a PowerShell script for Windows.
//!
//! Both configure suites stronger than the clients' defaults, all of which the gateway
//! accepts: the profile asks for AES-256-GCM with PRF-HMAC-SHA2-256 and ECP-256 for IKE and
//! AES-256-GCM for ESP; the script for AES-256-CBC with HMAC-SHA2-384 and ECP-384 for IKE
//! (the combination Windows is known to negotiate) and AES-256-GCM for ESP.

use std::fmt::Write as _;

use p12_keystore::{EncryptionAlgorithm, MacAlgorithm};

use crate::error::{PkiError, Result};
use crate::export::{ClientBundle, Format, pem_der, pkcs12_with};

/// The connection's name on the device.
fn connection_name(gateway: &str) -> String {
    format!("Gatehouse {gateway}")
}

/// Standard base64 with padding (RFC 4648 section 4).
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A random (version 4) UUID, upper case as Apple's tools write them.
fn uuid() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| PkiError::Corrupt("the system random generator failed".into()))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// Escapes text for an XML element.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Base64 wrapped at 64 columns and indented, for a plist `<data>` element.
fn plist_data(data: &[u8], indent: &str) -> String {
    let b64 = base64(data);
    let mut out = String::new();
    for line in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{indent}{}", String::from_utf8_lossy(line));
    }
    out
}

/// Apple's `CertificateType` for the client certificate's key.
fn apple_certificate_type(cert_der: &[u8]) -> Result<&'static str> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::Corrupt(format!("stored certificate does not parse: {e}")))?;
    let spki = cert.public_key();
    let alg = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    Ok(match (alg.as_str(), curve.as_deref()) {
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => "ECDSA384",
        ("1.2.840.10045.2.1", Some("1.3.132.0.35")) => "ECDSA521",
        ("1.2.840.10045.2.1", _) => "ECDSA256",
        ("1.3.101.112", _) => "Ed25519",
        _ => "RSA",
    })
}

/// The common name of the CA, which makes Apple clients send a CERTREQ for it.
fn common_name(cert_der: &[u8]) -> Result<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::Corrupt(format!("stored CA certificate does not parse: {e}")))?;
    Ok(cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("Gatehouse CA")
        .to_owned())
}

/// The Apple configuration profile: a VPN payload (IKEv2, certificate authentication), the
/// client's PKCS#12 and the CA as a trusted root. The PKCS#12 uses the legacy algorithms
/// (3DES, SHA-1 MAC) Apple's importer reads on every version; its password is not in the
/// profile: the device asks for it during installation.
pub(crate) fn mobileconfig(b: &ClientBundle<'_>, password: &str) -> Result<Vec<u8>> {
    if password.is_empty() {
        return Err(PkiError::PasswordRequired(Format::Mobileconfig));
    }
    let p12 = pkcs12_with(
        b,
        password,
        EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
        MacAlgorithm::HmacSha1,
    )?;
    let cert_der = pem_der(b.cert_pem, "certificate")?;
    let ca_der = pem_der(b.ca_pem, "CA certificate")?;
    let (top, vpn, p12_id, ca_id) = (uuid()?, uuid()?, uuid()?, uuid()?);
    let name = xml(b.name);
    let gateway = xml(b.gateway);
    let conn = xml(&connection_name(b.gateway));
    let id_base = format!("gatehouse.{}.{}", b.gateway, b.name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>();
    let cert_type = apple_certificate_type(&cert_der)?;
    let ca_cn = xml(&common_name(&ca_der)?);
    let sa = |indent: &str| {
        format!(
            "{indent}<dict>\n\
             {indent}  <key>EncryptionAlgorithm</key>\n{indent}  <string>AES-256-GCM</string>\n\
             {indent}  <key>IntegrityAlgorithm</key>\n{indent}  <string>SHA2-256</string>\n\
             {indent}  <key>DiffieHellmanGroup</key>\n{indent}  <integer>19</integer>\n\
             {indent}  <key>LifeTimeInMinutes</key>\n{indent}  <integer>1440</integer>\n\
             {indent}</dict>\n"
        )
    };
    let mut x = String::new();
    x.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n  <key>PayloadContent</key>\n  <array>\n",
    );
    // The VPN payload.
    let _ = write!(
        x,
        "    <dict>\n\
         \x20     <key>PayloadType</key>\n      <string>com.apple.vpn.managed</string>\n\
         \x20     <key>PayloadIdentifier</key>\n      <string>{id_base}.vpn</string>\n\
         \x20     <key>PayloadUUID</key>\n      <string>{vpn}</string>\n\
         \x20     <key>PayloadVersion</key>\n      <integer>1</integer>\n\
         \x20     <key>PayloadDisplayName</key>\n      <string>{conn}</string>\n\
         \x20     <key>UserDefinedName</key>\n      <string>{conn}</string>\n\
         \x20     <key>VPNType</key>\n      <string>IKEv2</string>\n\
         \x20     <key>IKEv2</key>\n      <dict>\n\
         \x20       <key>RemoteAddress</key>\n        <string>{gateway}</string>\n\
         \x20       <key>RemoteIdentifier</key>\n        <string>{gateway}</string>\n\
         \x20       <key>LocalIdentifier</key>\n        <string>{name}</string>\n\
         \x20       <key>AuthenticationMethod</key>\n        <string>Certificate</string>\n\
         \x20       <key>CertificateType</key>\n        <string>{cert_type}</string>\n\
         \x20       <key>PayloadCertificateUUID</key>\n        <string>{p12_id}</string>\n\
         \x20       <key>ServerCertificateIssuerCommonName</key>\n        <string>{ca_cn}</string>\n\
         \x20       <key>ExtendedAuthEnabled</key>\n        <integer>0</integer>\n\
         \x20       <key>EnablePFS</key>\n        <integer>0</integer>\n\
         \x20       <key>DeadPeerDetectionRate</key>\n        <string>Medium</string>\n\
         \x20       <key>DisableMOBIKE</key>\n        <integer>0</integer>\n\
         \x20       <key>IKESecurityAssociationParameters</key>\n{ike}\
         \x20       <key>ChildSecurityAssociationParameters</key>\n{child}\
         \x20     </dict>\n\
         \x20     <key>IPv4</key>\n      <dict>\n\
         \x20       <key>OverridePrimary</key>\n        <integer>1</integer>\n\
         \x20     </dict>\n\
         \x20   </dict>\n",
        ike = sa("        "),
        child = sa("        "),
    );
    // The client's PKCS#12.
    let _ = write!(
        x,
        "    <dict>\n\
         \x20     <key>PayloadType</key>\n      <string>com.apple.security.pkcs12</string>\n\
         \x20     <key>PayloadIdentifier</key>\n      <string>{id_base}.pkcs12</string>\n\
         \x20     <key>PayloadUUID</key>\n      <string>{p12_id}</string>\n\
         \x20     <key>PayloadVersion</key>\n      <integer>1</integer>\n\
         \x20     <key>PayloadDisplayName</key>\n      <string>{name} (Gatehouse client certificate)</string>\n\
         \x20     <key>PayloadCertificateFileName</key>\n      <string>{name}.p12</string>\n\
         \x20     <key>PayloadContent</key>\n      <data>\n{data}      </data>\n\
         \x20   </dict>\n",
        data = plist_data(&p12, "      "),
    );
    // The CA.
    let _ = write!(
        x,
        "    <dict>\n\
         \x20     <key>PayloadType</key>\n      <string>com.apple.security.root</string>\n\
         \x20     <key>PayloadIdentifier</key>\n      <string>{id_base}.ca</string>\n\
         \x20     <key>PayloadUUID</key>\n      <string>{ca_id}</string>\n\
         \x20     <key>PayloadVersion</key>\n      <integer>1</integer>\n\
         \x20     <key>PayloadDisplayName</key>\n      <string>{ca_cn}</string>\n\
         \x20     <key>PayloadCertificateFileName</key>\n      <string>gatehouse-ca.cer</string>\n\
         \x20     <key>PayloadContent</key>\n      <data>\n{data}      </data>\n\
         \x20   </dict>\n",
        data = plist_data(&ca_der, "      "),
    );
    let _ = write!(
        x,
        "  </array>\n\
         \x20 <key>PayloadDisplayName</key>\n  <string>{conn} ({name})</string>\n\
         \x20 <key>PayloadDescription</key>\n  <string>IKEv2 VPN to {gateway} with the certificate of {name}, written by gatehouse-certs.</string>\n\
         \x20 <key>PayloadIdentifier</key>\n  <string>{id_base}</string>\n\
         \x20 <key>PayloadType</key>\n  <string>Configuration</string>\n\
         \x20 <key>PayloadUUID</key>\n  <string>{top}</string>\n\
         \x20 <key>PayloadVersion</key>\n  <integer>1</integer>\n\
         \x20 <key>PayloadRemovalDisallowed</key>\n  <false/>\n\
         </dict>\n</plist>\n",
    );
    Ok(x.into_bytes())
}

/// Quotes text for a single-quoted PowerShell string.
fn ps(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Base64 split into PowerShell string lines joined with `+`.
fn ps_base64(var: &str, data: &[u8]) -> String {
    let b64 = base64(data);
    let lines: Vec<String> = b64
        .as_bytes()
        .chunks(76)
        .map(|l| format!("  '{}'", String::from_utf8_lossy(l)))
        .collect();
    format!("${var} = (\n{}\n) -join ''\n", lines.join(",\n"))
}

/// The PowerShell script for Windows 10/11: imports the CA into LocalMachine\Root and the
/// client's PKCS#12 into LocalMachine\My (machine certificate authentication), adds the
/// IKEv2 connection for all users and sets its IPsec suites. With a password, the script
/// asks for it; the password is not in the script.
pub(crate) fn windows_script(b: &ClientBundle<'_>, password: &str) -> Result<Vec<u8>> {
    let p12 = pkcs12_with(
        b,
        password,
        EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
        MacAlgorithm::HmacSha1,
    )?;
    let ca_der = pem_der(b.ca_pem, "CA certificate")?;
    let conn = connection_name(b.gateway);
    let password_line = if password.is_empty() {
        "$Password = New-Object System.Security.SecureString\n".to_owned()
    } else {
        format!(
            "$Password = Read-Host -AsSecureString -Prompt {}\n",
            ps(&format!(
                "Password of the certificate of {} (given to gatehouse-certs export)",
                b.name
            ))
        )
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "# Gatehouse IKEv2 connection \"{conn}\" for {name}, for the VPN client built into\n\
         # Windows 10 and 11. Written by gatehouse-certs. Run it once in an elevated PowerShell:\n\
         #   powershell -ExecutionPolicy Bypass -File .\\<this file>.ps1\n\
         # It imports the Gatehouse CA into LocalMachine\\Root and the certificate of {name}\n\
         # (with its private key) into LocalMachine\\My, adds the connection for all users and\n\
         # sets IPsec suites stronger than Windows' defaults (which the gateway also accepts).\n\
         # Then connect from the network settings or with: rasdial {conn_q}\n\
         #Requires -RunAsAdministrator\n\
         $ErrorActionPreference = 'Stop'\n\
         $Name = {conn_ps}\n\
         $Gateway = {gw_ps}\n",
        name = b.name,
        conn_q = ps(&conn).replace('\'', "\""),
        conn_ps = ps(&conn),
        gw_ps = ps(b.gateway),
    );
    s.push_str(&ps_base64("CaBase64", &ca_der));
    s.push_str(&ps_base64("Pkcs12Base64", &p12));
    s.push_str(&password_line);
    let _ = write!(
        s,
        "$Dir = Join-Path $env:TEMP ('gatehouse-' + [guid]::NewGuid())\n\
         New-Item -ItemType Directory -Path $Dir | Out-Null\n\
         try {{\n\
         \x20   $CaFile = Join-Path $Dir 'gatehouse-ca.cer'\n\
         \x20   [IO.File]::WriteAllBytes($CaFile, [Convert]::FromBase64String($CaBase64))\n\
         \x20   Import-Certificate -FilePath $CaFile -CertStoreLocation Cert:\\LocalMachine\\Root | Out-Null\n\
         \x20   $PfxFile = Join-Path $Dir {pfx}\n\
         \x20   [IO.File]::WriteAllBytes($PfxFile, [Convert]::FromBase64String($Pkcs12Base64))\n\
         \x20   Import-PfxCertificate -FilePath $PfxFile -CertStoreLocation Cert:\\LocalMachine\\My -Password $Password | Out-Null\n\
         }} finally {{\n\
         \x20   Remove-Item -Recurse -Force $Dir\n\
         }}\n\
         if (Get-VpnConnection -AllUserConnection -Name $Name -ErrorAction SilentlyContinue) {{\n\
         \x20   Remove-VpnConnection -AllUserConnection -Name $Name -Force\n\
         }}\n\
         Add-VpnConnection -Name $Name -ServerAddress $Gateway -TunnelType Ikev2 -AuthenticationMethod MachineCertificate -EncryptionLevel Required -AllUserConnection -Force\n\
         Set-VpnConnectionIPsecConfiguration -ConnectionName $Name -AuthenticationTransformConstants GCMAES256 -CipherTransformConstants GCMAES256 -EncryptionMethod AES256 -IntegrityCheckMethod SHA384 -DHGroup ECP384 -PfsGroup None -AllUserConnection -Force\n\
         Write-Host \"Added the VPN connection $Name; connect with: rasdial `\"$Name`\"\"\n",
        pfx = ps(&format!("{}.p12", b.name)),
    );
    Ok(s.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn uuids_are_version_4_and_distinct() {
        let (a, b) = (uuid().unwrap(), uuid().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn quoting() {
        assert_eq!(ps("it's"), "'it''s'");
        assert_eq!(xml("a<b&c>"), "a&lt;b&amp;c&gt;");
    }
}
