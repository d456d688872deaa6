//! Which shard a point lives in, exactly as Qdrant decides it, so that a
//! multi-shard snapfs snapshot stays valid inside Qdrant and the reverse.
//!
//! Qdrant places `HASH_RING_SHARD_SCALE` (100) virtual nodes `(shard_id, i)` per
//! shard on a consistent-hash ring (the `hashring` crate) hashed with SipHash-2-4
//! under zero keys, and hashes point ids with its "stable hash": plain byte writes,
//! native-endian integers, a discriminant in front. We use the same crates and
//! feed the hasher the same bytes.

use std::hash::{BuildHasherDefault, Hash, Hasher};

use qdrant_edge::PointId;
use siphasher::sip::SipHasher24;

/// Virtual nodes per shard (Qdrant's `HASH_RING_SHARD_SCALE`).
pub const VIRTUAL_NODES_PER_SHARD: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VirtualNode {
    shard: u32,
    index: u32,
}

impl Hash for VirtualNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.shard.to_ne_bytes());
        state.write(&self.index.to_ne_bytes());
    }
}

struct PointKey<'a>(&'a PointId);

impl Hash for PointKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.0 {
            PointId::NumId(num) => {
                state.write(&0u64.to_ne_bytes());
                state.write(&num.to_ne_bytes());
            }
            PointId::Uuid(uuid) => {
                let bytes = uuid.as_bytes();
                state.write(&1u64.to_ne_bytes());
                state.write(&(bytes.len() as u64).to_ne_bytes());
                state.write(bytes);
            }
        }
    }
}

pub struct ShardRouter {
    shard_count: u32,
    ring: hashring::HashRing<VirtualNode, BuildHasherDefault<SipHasher24>>,
}

impl ShardRouter {
    /// A router over shards `0..shard_count` (shard_count >= 1).
    pub fn new(shard_count: u32) -> Self {
        let mut ring =
            hashring::HashRing::with_hasher(BuildHasherDefault::<SipHasher24>::default());
        for shard in 0..shard_count {
            for index in 0..VIRTUAL_NODES_PER_SHARD {
                ring.add(VirtualNode { shard, index });
            }
        }
        ShardRouter { shard_count, ring }
    }

    pub fn shard_for(&self, id: &PointId) -> u32 {
        if self.shard_count <= 1 {
            return 0;
        }
        self.ring
            .get(&PointKey(id))
            .map(|node| node.shard)
            .expect("ring has nodes for shard_count >= 1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_shard_takes_everything() {
        let router = ShardRouter::new(1);
        for n in 0..100 {
            assert_eq!(router.shard_for(&PointId::NumId(n)), 0);
        }
    }

    #[test]
    fn spreads_points_fairly_over_shards() {
        let router = ShardRouter::new(3);
        let mut counts = [0usize; 3];
        for n in 0..3000 {
            counts[router.shard_for(&PointId::NumId(n)) as usize] += 1;
        }
        for count in counts {
            assert!((700..1300).contains(&count), "unfair split {counts:?}");
        }
    }
}
