//! Platforms whose routing and DNS code is not written yet (Windows, macOS): connecting
//! reports that clearly instead of half-configuring the host.

use std::path::Path;

use super::{Change, NetError, NetPlan};

pub(super) fn plan_changes(_plan: &NetPlan, _dir: &Path) -> Result<Vec<Change>, NetError> {
    Err(NetError(format!(
        "routes and DNS are not implemented on {} yet",
        std::env::consts::OS
    )))
}

pub(super) fn apply(_change: &Change, _plan: &NetPlan) -> Result<(), NetError> {
    Err(NetError("unsupported platform".into()))
}

pub(super) fn undo(_change: &Change) -> Result<(), NetError> {
    Ok(())
}

pub(super) fn load_kill_switch(_ruleset: &str) -> Result<(), NetError> {
    Err(NetError(format!(
        "the kill switch is not supported on {} yet; connect without it",
        std::env::consts::OS
    )))
}

pub(super) fn remove_kill_switch() -> Result<(), NetError> {
    Ok(())
}

pub(super) fn tun_ipv6(
    _tun: &str,
    _v6: &gatehouse_engine::pool6::Ipv6Assignment,
) -> Result<(), NetError> {
    Err(NetError(
        "IPv6 inside the tunnel is not configured on this platform yet".into(),
    ))
}
