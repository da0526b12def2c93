//! `client_routing`: whether point-to-site users may choose their own routes.
//!
//! The gateway itself does nothing different either way - it forwards only what it routes,
//! whatever a client sends into its tunnel. The key travels to Gatehouse clients in the
//! profile `gatehouse-certs export --format gatehouse` writes (it reads this gateway.toml),
//! and the client then refuses a full/split choice or extra routes the gateway forbids.

/// `client_routing = "user" | "fixed"` (the type the exported profile carries).
pub use gatehouse_certs::profile::ClientRouting;

#[cfg(test)]
mod tests {
    use crate::config::GatewayConfig;

    use super::*;

    #[test]
    fn client_routing_defaults_to_user_and_refuses_other_values() {
        let c: GatewayConfig = toml::from_str("public_addr = \"gw\"").unwrap();
        assert_eq!(c.client_routing, ClientRouting::User);
        let c: GatewayConfig =
            toml::from_str("public_addr = \"gw\"\nclient_routing = \"fixed\"").unwrap();
        assert_eq!(c.client_routing, ClientRouting::Fixed);
        let err = toml::from_str::<GatewayConfig>("public_addr = \"gw\"\nclient_routing = \"any\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("client_routing") && err.contains("fixed"),
            "{err}"
        );
    }
}
