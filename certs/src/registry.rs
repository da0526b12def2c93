//! The SQLite registry of every certificate the CA issued.
//!
//! One row per certificate in `certificates`; the `meta` table holds the CRL number counter.
//! Times are unix seconds. Schema version 2 added intermediate CAs (`kind = 'intermediate'`)
//! and `issuer`, the serial of the intermediate that signed a certificate (NULL: the root);
//! a version 1 registry is migrated when it is opened. The registry is the source of truth for status: a certificate is
//! *valid* when it is neither revoked nor past its not-after date.

use std::fmt;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use serde::Serialize;
use time::OffsetDateTime;

use crate::crl::Reason;
use crate::error::{PkiError, Result};

/// The `certificates` table of schema version 2.
const CERTIFICATES_TABLE: &str = "
CREATE TABLE certificates (
    serial            TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('client', 'server', 'intermediate')),
    sha256            TEXT NOT NULL,
    not_before        INTEGER NOT NULL,
    not_after         INTEGER NOT NULL,
    cert_pem          TEXT NOT NULL,
    has_key           INTEGER NOT NULL,
    revoked_at        INTEGER,
    revocation_reason TEXT,
    issuer            TEXT
);
CREATE INDEX certificates_by_name ON certificates (name);
";

const META_TABLE: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('schema_version', 2), ('crl_number', 0);
";

/// The schema this version writes.
const SCHEMA_VERSION: i64 = 2;

/// Version 1 -> 2: the table is rebuilt (SQLite cannot widen a CHECK constraint in place);
/// rowids are kept, so `list` keeps its order.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE certificates RENAME TO certificates_v1;
DROP INDEX certificates_by_name;
";

const COPY_1_TO_2: &str = "
INSERT INTO certificates (rowid, serial, name, kind, sha256, not_before, not_after, cert_pem,
                          has_key, revoked_at, revocation_reason, issuer)
    SELECT rowid, serial, name, kind, sha256, not_before, not_after, cert_pem, has_key,
           revoked_at, revocation_reason, NULL
    FROM certificates_v1;
DROP TABLE certificates_v1;
UPDATE meta SET value = 2 WHERE key = 'schema_version';
";

const COLUMNS: &str = "serial, name, kind, sha256, not_before, not_after, cert_pem, has_key, \
                       revoked_at, revocation_reason, issuer";

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A remote worker's certificate (clientAuth).
    Client,
    /// A gateway's certificate (serverAuth + ikeIntermediate).
    Server,
    /// An intermediate CA under the root (pathlen 0: it signs client certificates only).
    Intermediate,
}

impl Kind {
    /// The spelling used in the registry and in `list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Client => "client",
            Kind::Server => "server",
            Kind::Intermediate => "intermediate",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a certificate may still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not revoked and not expired.
    Valid,
    /// Revoked (whatever its dates).
    Revoked,
    /// Past its not-after date.
    Expired,
}

impl Status {
    /// The spelling used in `list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::Revoked => "revoked",
            Status::Expired => "expired",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One issued certificate as recorded in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// The name it was issued to (its CN).
    pub name: String,
    /// Client or gateway certificate.
    pub kind: Kind,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub sha256: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Whether its private key is in `private/<serial>.key` (false for CSR-issued ones).
    pub has_key: bool,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// Why it was revoked, if it was.
    pub reason: Option<Reason>,
    /// Serial of the intermediate CA that signed it; `None`: the root CA.
    pub issuer: Option<String>,
}

impl CertRecord {
    /// Its status at time `now`.
    pub fn status(&self, now: OffsetDateTime) -> Status {
        if self.revoked_at.is_some() {
            Status::Revoked
        } else if self.not_after <= now {
            Status::Expired
        } else {
            Status::Valid
        }
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        let kind: String = row.get(2)?;
        let reason: Option<String> = row.get(9)?;
        Ok(CertRecord {
            serial: row.get(0)?,
            name: row.get(1)?,
            kind: match kind.as_str() {
                "server" => Kind::Server,
                "intermediate" => Kind::Intermediate,
                _ => Kind::Client,
            },
            sha256: row.get(3)?,
            not_before: from_unix(row.get(4)?),
            not_after: from_unix(row.get(5)?),
            cert_pem: row.get(6)?,
            has_key: row.get(7)?,
            revoked_at: row.get::<_, Option<i64>>(8)?.map(from_unix),
            // An unknown reason string (written by a newer version) still means revoked.
            reason: reason.map(|r| r.parse().unwrap_or_default()),
            issuer: row.get(10)?,
        })
    }
}

fn from_unix(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The registry database.
#[derive(Debug)]
pub struct Registry {
    conn: Connection,
}

impl Registry {
    /// Creates a new registry at `path` (which must not exist) with the schema in place.
    pub fn create(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        conn.execute_batch(CERTIFICATES_TABLE)?;
        conn.execute_batch(META_TABLE)?;
        Ok(Registry { conn })
    }

    /// Opens an existing registry; never creates one.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Fail now, not halfway through a command, if this is not our database.
        let version = conn.query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get::<_, i64>(0),
        )?;
        let mut registry = Registry { conn };
        if version < SCHEMA_VERSION {
            registry.migrate()?;
        }
        Ok(registry)
    }

    /// Brings a version 1 registry to version 2 in one transaction (another process may
    /// have done it meanwhile: then there is nothing left to do).
    fn migrate(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )?;
        if version < SCHEMA_VERSION {
            tx.execute_batch(MIGRATE_1_TO_2)?;
            tx.execute_batch(CERTIFICATES_TABLE)?;
            tx.execute_batch(COPY_1_TO_2)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every certificate, oldest first.
    pub fn list(&self) -> Result<Vec<CertRecord>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM certificates ORDER BY rowid"
        ))?;
        let rows = stmt.query_map([], CertRecord::from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The certificate with this serial (hex, any case).
    pub fn by_serial(&self, serial: &str) -> Result<Option<CertRecord>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM certificates WHERE serial = ?1"),
                [serial.to_ascii_lowercase()],
                CertRecord::from_row,
            )
            .optional()?)
    }

    /// All certificates with this name, newest first.
    pub fn by_name(&self, name: &str) -> Result<Vec<CertRecord>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM certificates WHERE name = ?1 ORDER BY rowid DESC"
        ))?;
        let rows = stmt.query_map([name], CertRecord::from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The valid certificate with this name, if any.
    pub fn valid_by_name(&self, name: &str, now: OffsetDateTime) -> Result<Option<CertRecord>> {
        Ok(self
            .by_name(name)?
            .into_iter()
            .find(|r| r.status(now) == Status::Valid))
    }

    /// Records a newly issued certificate, unless a valid one with the same name exists:
    /// then nothing is written and that one's serial is returned as `Err`.
    pub fn insert_unique(
        &mut self,
        record: &CertRecord,
        now: OffsetDateTime,
    ) -> Result<std::result::Result<(), String>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT serial FROM certificates
                 WHERE name = ?1 AND revoked_at IS NULL AND not_after > ?2
                 ORDER BY rowid DESC LIMIT 1",
                params![record.name, now.unix_timestamp()],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(serial) = existing {
            return Ok(Err(serial));
        }
        tx.execute(
            &format!("INSERT INTO certificates ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
            params![
                record.serial,
                record.name,
                record.kind.as_str(),
                record.sha256,
                record.not_before.unix_timestamp(),
                record.not_after.unix_timestamp(),
                record.cert_pem,
                record.has_key,
                record.revoked_at.map(|t| t.unix_timestamp()),
                record.reason.map(Reason::as_str),
                record.issuer,
            ],
        )?;
        tx.commit()?;
        Ok(Ok(()))
    }

    /// Publishes new CRLs in one transaction: optionally marks `revoke` (serial, time,
    /// reason) revoked, takes the next CRL number, and hands every certificate (revoked or
    /// not: the intermediate CAs that sign CRLs are among them) and that number to
    /// `publish`, which signs and writes the CRLs. The transaction commits only
    /// if `publish` succeeds, so a revocation is never recorded without its CRL.
    pub fn publish_crl<T>(
        &mut self,
        revoke: Option<(&str, OffsetDateTime, Reason)>,
        publish: impl FnOnce(&[CertRecord], u64) -> Result<T>,
    ) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some((serial, at, reason)) = revoke {
            let changed = tx.execute(
                "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3
                 WHERE serial = ?1 AND revoked_at IS NULL",
                params![serial, at.unix_timestamp(), reason.as_str()],
            )?;
            if changed != 1 {
                return Err(PkiError::Corrupt(format!(
                    "certificate {serial} vanished or was revoked concurrently"
                )));
            }
        }
        let number: i64 = tx.query_row(
            "UPDATE meta SET value = value + 1 WHERE key = 'crl_number' RETURNING value",
            [],
            |r| r.get(0),
        )?;
        let all = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM certificates ORDER BY rowid"
            ))?;
            let rows = stmt.query_map([], CertRecord::from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let out = publish(&all, u64::try_from(number).unwrap_or(1))?;
        tx.commit()?;
        Ok(out)
    }

    /// Closes the database, reporting errors (used by `init` before renaming it into place).
    pub fn close(self) -> Result<()> {
        self.conn.close().map_err(|(_, e)| PkiError::Registry(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn record(serial: &str, name: &str, not_after: OffsetDateTime) -> CertRecord {
        CertRecord {
            serial: serial.into(),
            name: name.into(),
            kind: Kind::Client,
            sha256: "00".into(),
            not_before: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            not_after: from_unix(not_after.unix_timestamp()),
            cert_pem: "PEM".into(),
            has_key: true,
            revoked_at: None,
            reason: None,
            issuer: None,
        }
    }

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::create(&dir.path().join("registry.sqlite")).unwrap();
        (dir, reg)
    }

    #[test]
    fn names_are_unique_among_valid_certificates() {
        let (_dir, mut reg) = registry();
        let now = OffsetDateTime::now_utc();
        let later = now + Duration::days(10);
        reg.insert_unique(&record("01", "alice", later), now)
            .unwrap()
            .unwrap();
        assert_eq!(
            reg.insert_unique(&record("02", "alice", later), now)
                .unwrap(),
            Err("01".to_string())
        );
        // An expired one does not hold the name.
        reg.insert_unique(&record("03", "bob", now - Duration::days(1)), now)
            .unwrap()
            .unwrap();
        reg.insert_unique(&record("04", "bob", later), now)
            .unwrap()
            .unwrap();
        assert_eq!(reg.list().unwrap().len(), 3);
        assert_eq!(reg.valid_by_name("bob", now).unwrap().unwrap().serial, "04");
    }

    #[test]
    fn revocation_commits_only_with_its_crl() {
        let (_dir, mut reg) = registry();
        let now = OffsetDateTime::now_utc();
        reg.insert_unique(&record("0a", "carol", now + Duration::days(1)), now)
            .unwrap()
            .unwrap();
        let failed: Result<()> = reg
            .publish_crl(Some(("0a", now, Reason::KeyCompromise)), |_, _| {
                Err(PkiError::Corrupt("disk full".into()))
            });
        assert!(failed.is_err());
        let rec = reg.by_serial("0A").unwrap().unwrap();
        assert_eq!(rec.status(now), Status::Valid);

        let (count, number) = reg
            .publish_crl(Some(("0a", now, Reason::KeyCompromise)), |all, n| {
                Ok((all.iter().filter(|r| r.revoked_at.is_some()).count(), n))
            })
            .unwrap();
        // The failed attempt's CRL number was rolled back too.
        assert_eq!((count, number), (1, 1));
        let rec = reg.by_serial("0a").unwrap().unwrap();
        assert_eq!(rec.status(now), Status::Revoked);
        assert_eq!(rec.reason, Some(Reason::KeyCompromise));
        let (_, number) = reg.publish_crl(None, |r, n| Ok((r.len(), n))).unwrap();
        assert_eq!(number, 2);
    }

    #[test]
    fn a_version_1_registry_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite");
        // The version 1 schema, as earlier releases wrote it, with two certificates.
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE certificates (
                    serial TEXT PRIMARY KEY, name TEXT NOT NULL,
                    kind TEXT NOT NULL CHECK (kind IN ('client', 'server')),
                    sha256 TEXT NOT NULL, not_before INTEGER NOT NULL,
                    not_after INTEGER NOT NULL, cert_pem TEXT NOT NULL,
                    has_key INTEGER NOT NULL, revoked_at INTEGER, revocation_reason TEXT);
                 CREATE INDEX certificates_by_name ON certificates (name);
                 CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 INSERT INTO meta (key, value) VALUES ('schema_version', 1), ('crl_number', 7);
                 INSERT INTO certificates VALUES
                    ('0b', 'gw', 'server', '00', 1700000000, 4000000000, 'PEM', 1, NULL, NULL),
                    ('0a', 'alice', 'client', '00', 1700000000, 4000000000, 'PEM', 1,
                     1700000100, 'superseded');",
            )
            .unwrap();
        let mut reg = Registry::open(&path).unwrap();
        let list = reg.list().unwrap();
        let names: Vec<_> = list.iter().map(|r| (r.name.as_str(), r.kind)).collect();
        assert_eq!(
            names,
            [("gw", Kind::Server), ("alice", Kind::Client)],
            "order kept"
        );
        assert!(list.iter().all(|r| r.issuer.is_none()));
        assert_eq!(list[1].reason, Some(Reason::Superseded));
        // Intermediates can be recorded now, and the CRL counter went on.
        let now = OffsetDateTime::now_utc();
        let mut inter = record("0c", "branch", now + Duration::days(10));
        inter.kind = Kind::Intermediate;
        reg.insert_unique(&inter, now).unwrap().unwrap();
        let mut leaf = record("0d", "bob", now + Duration::days(10));
        leaf.issuer = Some("0c".into());
        reg.insert_unique(&leaf, now).unwrap().unwrap();
        assert_eq!(
            reg.by_serial("0d").unwrap().unwrap().issuer.as_deref(),
            Some("0c")
        );
        assert_eq!(
            reg.by_serial("0c").unwrap().unwrap().kind,
            Kind::Intermediate
        );
        let (_, number) = reg.publish_crl(None, |all, n| Ok((all.len(), n))).unwrap();
        assert_eq!(number, 8);
        drop(reg);
        // Opening again finds version 2 and changes nothing.
        let reg = Registry::open(&path).unwrap();
        assert_eq!(reg.list().unwrap().len(), 4);
        let version: i64 = reg
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, 2);
    }

    #[test]
    fn open_refuses_a_missing_or_foreign_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite");
        assert!(Registry::open(&path).is_err());
        assert!(!path.exists(), "open must not create the database");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE x (y)")
            .unwrap();
        assert!(Registry::open(&path).is_err());
    }
}
