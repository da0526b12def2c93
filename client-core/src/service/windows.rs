//! Windows: the same JSON lines over a named pipe (`\\.\pipe\gatehouse` unless
//! `GATEHOUSE_SOCKET` names another). Who may open it is the pipe's DACL: full control for
//! LocalSystem, Administrators and the pipe's owner (the service's account), read and write
//! for interactive users (the person at the desktop) - nobody else, and never a remote
//! machine (`PIPE_REJECT_REMOTE_CLIENTS`). The first instance is created with
//! `FILE_FLAG_FIRST_PIPE_INSTANCE`, so a process that grabbed the name first (pipe squatting)
//! makes the service fail to start instead of listening behind an impostor.

use std::path::Path;

use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};

use super::server::Backend;
use super::server::handle;
use crate::manager::Manager;

/// The pipe's security descriptor in SDDL: protected DACL (no inherited entries); generic
/// all for SYSTEM (`SY`), Administrators (`BA`) and the owner (`OW`); generic read + write
/// for interactive users (`IU`).
const PIPE_SDDL: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;OW)(A;;GRGW;;;IU)";

/// `ERROR_ACCESS_DENIED`: what creating a first instance returns when the name is taken.
const ERROR_ACCESS_DENIED: i32 = 5;

/// Serves front ends on the pipe `path` until the process ends.
pub async fn serve(path: &Path, manager: Manager) -> std::io::Result<()> {
    let backend = Backend::start(manager);
    let security = security::PipeSecurity::from_sddl(PIPE_SDDL)?;
    let mut server = create(path, &security, true).map_err(|e| {
        if e.raw_os_error() == Some(ERROR_ACCESS_DENIED) {
            std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another client service is already listening on {} (or another program took that pipe name)",
                    path.display()
                ),
            )
        } else {
            e
        }
    })?;
    tracing::info!(pipe = %path.display(), "client service listening");
    loop {
        if let Err(e) = server.connect().await {
            // One front end's failed handshake must not stop the service: start over with a
            // fresh instance.
            tracing::debug!(error = %e, "a front end went away while connecting");
            server = create(path, &security, false)?;
            continue;
        }
        // A fresh instance for the next front end before this one is served.
        let connected = std::mem::replace(&mut server, create(path, &security, false)?);
        let backend = backend.clone();
        tokio::spawn(async move {
            let (rd, wr) = tokio::io::split(connected);
            if let Err(e) = handle(rd, wr, "named pipe client", backend).await {
                tracing::debug!(error = %e, "front end connection ended");
            }
        });
    }
}

fn create(
    path: &Path,
    security: &security::PipeSecurity,
    first: bool,
) -> std::io::Result<NamedPipeServer> {
    let mut options = ServerOptions::new();
    options
        .first_pipe_instance(first)
        .reject_remote_clients(true);
    security.create(&options, path)
}

/// The one place the client touches raw Win32 security: tokio creates a pipe with a
/// security descriptor only through a raw `SECURITY_ATTRIBUTES` pointer, and the descriptor
/// comes from `ConvertStringSecurityDescriptorToSecurityDescriptorW`.
#[allow(unsafe_code)]
mod security {
    use std::ffi::c_void;
    use std::path::Path;

    use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::Security::Authorization::{
        ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
    };
    use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};

    /// A self-relative security descriptor allocated by Windows (freed with `LocalFree`).
    pub(super) struct PipeSecurity {
        descriptor: PSECURITY_DESCRIPTOR,
    }

    // SAFETY: the descriptor is an immutable, self-contained allocation owned by this value;
    // Windows only reads it while creating a pipe.
    unsafe impl Send for PipeSecurity {}
    // SAFETY: as above - nothing ever writes through the pointer.
    unsafe impl Sync for PipeSecurity {}

    impl PipeSecurity {
        pub(super) fn from_sddl(sddl: &str) -> std::io::Result<Self> {
            let wide: Vec<u16> = sddl.encode_utf16().chain(std::iter::once(0)).collect();
            let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
            // SAFETY: `wide` is NUL-terminated UTF-16 that outlives the call; `descriptor` is
            // a valid out pointer; the size out-parameter is optional (null).
            let ok = unsafe {
                ConvertStringSecurityDescriptorToSecurityDescriptorW(
                    wide.as_ptr(),
                    SDDL_REVISION_1,
                    &mut descriptor,
                    std::ptr::null_mut(),
                )
            };
            if ok == 0 || descriptor.is_null() {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Self { descriptor })
        }

        /// Creates a pipe instance at `path` guarded by this descriptor.
        pub(super) fn create(
            &self,
            options: &ServerOptions,
            path: &Path,
        ) -> std::io::Result<NamedPipeServer> {
            let mut attributes = SECURITY_ATTRIBUTES {
                nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
                lpSecurityDescriptor: self.descriptor,
                bInheritHandle: 0,
            };
            // SAFETY: `attributes` is a properly sized SECURITY_ATTRIBUTES pointing at a valid
            // descriptor (owned by `self`, alive for the call); CreateNamedPipeW copies what
            // it needs and keeps no pointer.
            unsafe {
                options.create_with_security_attributes_raw(
                    path.as_os_str(),
                    (&mut attributes as *mut SECURITY_ATTRIBUTES).cast::<c_void>(),
                )
            }
        }
    }

    impl Drop for PipeSecurity {
        fn drop(&mut self) {
            // SAFETY: the descriptor came from ConvertStringSecurityDescriptorToSecurity-
            // DescriptorW, which allocates with LocalAlloc; it is freed exactly once.
            unsafe {
                LocalFree(self.descriptor);
            }
        }
    }
}
