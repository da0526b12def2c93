//! Blocks of `client_pool`: each node claims one in etcd (a transaction that creates
//! `pool/<block>` only if nobody holds it, tied to the node's lease) and leases addresses
//! only inside it, so two nodes never hand out the same address. A dead node's lease
//! expires after [`super::LEASE_TTL_SECS`] and its block is free again.

use anyhow::{Result, bail};
use ipnet::Ipv4Net;

use crate::etcd::Etcd;

/// The blocks of `/prefix` that `pool` splits into, in address order.
pub fn blocks_of(pool: Ipv4Net, prefix: u8) -> Vec<Ipv4Net> {
    pool.trunc()
        .subnets(prefix)
        .map(Iterator::collect)
        .unwrap_or_default()
}

/// The etcd key of `block` in `cluster` (`/` is a key separator, so `10.8.0.64_26`).
pub fn block_key(cluster: &str, block: Ipv4Net) -> String {
    super::key(
        cluster,
        &format!("pool/{}_{}", block.network(), block.prefix_len()),
    )
}

/// Claims a block of `pool` for `node` under `lease`: the block it held before (a restart
/// within the TTL), else the first free one. Blocking.
pub fn claim(
    etcd: &Etcd,
    cluster: &str,
    node: &str,
    pool: Ipv4Net,
    prefix: u8,
    lease: i64,
) -> Result<Ipv4Net> {
    let blocks = blocks_of(pool, prefix);
    let held = etcd.list(&super::key(cluster, "pool/"), blocks.len() + 1)?;
    let mine = blocks.iter().copied().find(|b| {
        let k = block_key(cluster, *b);
        held.iter()
            .any(|(key, kv)| *key == k && kv.value == node.as_bytes())
    });
    for b in mine.into_iter().chain(blocks.iter().copied()) {
        if etcd.claim(&block_key(cluster, b), node.as_bytes(), lease)? {
            return Ok(b);
        }
    }
    bail!(
        "every block of `client_pool` {pool} is held by another node ({} blocks of /{prefix}): give `ha.pool_block` a longer prefix or `client_pool` more room",
        blocks.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_splits_into_disjoint_blocks_with_keys_without_slashes() {
        let pool: Ipv4Net = "10.8.0.0/24".parse().unwrap();
        let b = blocks_of(pool, 26);
        assert_eq!(b.len(), 4);
        assert_eq!(b[1].to_string(), "10.8.0.64/26");
        assert_eq!(block_key("gw", b[1]), "/gatehouse/gw/pool/10.8.0.64_26");
        assert!(blocks_of(pool, 20).is_empty());
    }
}
