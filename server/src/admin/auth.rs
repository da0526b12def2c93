//! The bearer token of the TCP listener: made once (32 random bytes, hex, file mode 0600),
//! compared in constant time.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::api::{AdminState, error};

/// Reads the token in `path`, making it first when there is none.
pub fn load_or_create(path: &Path) -> Result<String> {
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim().to_owned();
        anyhow::ensure!(
            t.len() >= 32,
            "{} holds a token shorter than 32 characters: delete it and restart to get a new one",
            path.display()
        );
        return Ok(t);
    }
    let mut raw = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| anyhow::anyhow!("the OS random number generator failed"))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    write_private(path, &token)?;
    Ok(token)
}

/// Writes `text` to a new file readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o
        .open(path)
        .with_context(|| format!("creating the admin token {}", path.display()))?;
    writeln!(f, "{text}").with_context(|| format!("writing {}", path.display()))
}

/// Equal in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: with a token configured, the request must carry `Authorization: Bearer`
/// with it.
pub async fn require_token(State(s): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    if let Some(want) = &s.token {
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(got.trim().as_bytes(), want.as_bytes()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (the gateway's `admin.token_file`)",
            );
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("admin-token");
        let a = load_or_create(&p).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(load_or_create(&p).unwrap(), a);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
