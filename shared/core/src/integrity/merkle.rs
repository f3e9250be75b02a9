//! RFC 6962 Merkle trees: hashes, inclusion and consistency proofs built
//! from any source of complete-subtree hashes, and their verification by
//! the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(data);
    hasher.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree: `SHA-256()`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The root of a growing tree, one leaf at a time, in O(log n) memory: a
/// stack of complete subtrees, merged when two of a size meet.
#[derive(Debug, Clone, Default)]
pub struct RootBuilder {
    size: u64,
    stack: Vec<Hash>,
}

impl RootBuilder {
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut size = self.size;
        // Each trailing 1 bit of the old size is a subtree to merge with.
        while size & 1 == 1 {
            let left = self.stack.pop().unwrap_or_default();
            hash = node_hash(&left, &hash);
            size >>= 1;
        }
        self.stack.push(hash);
        self.size += 1;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// MTH of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// Hashes of complete subtrees: `node(level, index)` covers leaves
/// `index·2^level .. (index+1)·2^level`.
pub trait NodeSource {
    fn node(&self, level: u32, index: u64) -> Hash;
}

/// The root of a complete tree over `hashes` (a power of two of them).
pub fn complete_root(hashes: &[Hash]) -> Hash {
    match hashes.len() {
        0 => empty_root(),
        1 => hashes[0],
        n => {
            let (left, right) = hashes.split_at(n / 2);
            node_hash(&complete_root(left), &complete_root(right))
        }
    }
}

/// MTH(D[lo:hi]) for hi > lo.
pub fn subtree(source: &impl NodeSource, lo: u64, hi: u64) -> Hash {
    let n = hi - lo;
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        return source.node(n.trailing_zeros(), lo / n);
    }
    let k = split(n);
    node_hash(&subtree(source, lo, lo + k), &subtree(source, lo + k, hi))
}

/// The root of the first `size` leaves.
pub fn root(source: &impl NodeSource, size: u64) -> Hash {
    if size == 0 {
        empty_root()
    } else {
        subtree(source, 0, size)
    }
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves
/// (RFC 6962 §2.1.1 PATH), leaf side first.
pub fn inclusion_proof(source: &impl NodeSource, index: u64, size: u64) -> Vec<Hash> {
    fn path(source: &impl NodeSource, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) {
        let n = hi - lo;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            path(source, m, lo, lo + k, out);
            out.push(subtree(source, lo + k, hi));
        } else {
            path(source, m - k, lo + k, hi, out);
            out.push(subtree(source, lo, lo + k));
        }
    }
    let mut out = Vec::new();
    if index < size {
        path(source, index, 0, size, &mut out);
    }
    out
}

/// The consistency proof between the trees of `old` and `new` leaves
/// (RFC 6962 §2.1.2 PROOF). Empty when `old` is 0 or equals `new`.
pub fn consistency_proof(source: &impl NodeSource, old: u64, new: u64) -> Vec<Hash> {
    fn subproof(
        source: &impl NodeSource,
        m: u64,
        lo: u64,
        hi: u64,
        complete: bool,
        out: &mut Vec<Hash>,
    ) {
        let n = hi - lo;
        if m == n {
            if !complete {
                out.push(subtree(source, lo, hi));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            subproof(source, m, lo, lo + k, complete, out);
            out.push(subtree(source, lo + k, hi));
        } else {
            subproof(source, m - k, lo + k, hi, false, out);
            out.push(subtree(source, lo, lo + k));
        }
    }
    let mut out = Vec::new();
    if old > 0 && old < new {
        subproof(source, old, 0, new, true, &mut out);
    }
    out
}

/// RFC 9162 §2.1.3.2: does `proof` put `leaf` at `index` of the tree of
/// `size` leaves whose root is `root`?
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && &r == root
}

/// RFC 9162 §2.1.4.2: is the tree of `new` leaves (root `new_root`) an
/// extension of the tree of `old` leaves (root `old_root`)?
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    if old == 0 {
        // Every tree extends the empty one.
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut f_n, mut s_n) = (old - 1, new - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    &f_r == old_root && &s_r == new_root && s_n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// All leaf hashes in memory: the reference for the tile-backed source.
    struct Leaves(Vec<Hash>);

    impl NodeSource for Leaves {
        fn node(&self, level: u32, index: u64) -> Hash {
            let width = 1usize << level;
            let start = index as usize * width;
            complete_root(&self.0[start..start + width])
        }
    }

    fn leaves(n: u64) -> Leaves {
        Leaves((0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect())
    }

    /// Certificate Transparency's reference vectors (the eight leaves of
    /// its Merkle tree tests; each root and proof also computed here by an
    /// independent Python RFC 6962 implementation): roots of every size,
    /// inclusion and consistency proofs, checked against constants, not
    /// against this module's own functions.
    #[test]
    fn the_certificate_transparency_reference_vectors_hold() {
        fn hash(hex: &str) -> Hash {
            let mut out = [0u8; 32];
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
            }
            out
        }
        let data: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let tree = Leaves(data.iter().map(|d| leaf_hash(d)).collect());
        let mut builder = RootBuilder::default();
        for (size, expected) in (1..=8u64).zip(roots) {
            builder.push(tree.0[size as usize - 1]);
            assert_eq!(root(&tree, size), hash(expected), "root of {size}");
            assert_eq!(builder.root(), hash(expected), "built root of {size}");
        }
        let inclusion: [(u64, u64, &[&str]); 4] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (index, size, expected) in inclusion {
            let expected: Vec<Hash> = expected.iter().map(|h| hash(h)).collect();
            assert_eq!(
                inclusion_proof(&tree, index, size),
                expected,
                "{index} in {size}"
            );
            let (leaf, root) = (tree.0[index as usize], hash(roots[size as usize - 1]));
            assert!(verify_inclusion(index, size, &leaf, &expected, &root));
        }
        let consistency: [(u64, u64, &[&str]); 3] = [
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, new, expected) in consistency {
            let expected: Vec<Hash> = expected.iter().map(|h| hash(h)).collect();
            assert_eq!(
                consistency_proof(&tree, old, new),
                expected,
                "{old} to {new}"
            );
            let (old_root, new_root) =
                (hash(roots[old as usize - 1]), hash(roots[new as usize - 1]));
            assert!(verify_consistency(
                old, new, &old_root, &new_root, &expected
            ));
        }
    }

    /// RFC 6962's MTH written out directly, for comparison.
    fn mth(hashes: &[Hash]) -> Hash {
        match hashes.len() {
            0 => empty_root(),
            1 => hashes[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&hashes[..k]), &mth(&hashes[k..]))
            }
        }
    }

    #[test]
    fn known_roots() {
        // The empty tree and one leaf of empty data (RFC 6962 test vectors
        // as used by Certificate Transparency implementations).
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    fn hex(hash: &Hash) -> String {
        hash.iter().map(|b| format!("{b:02x}")).collect()
    }

    proptest! {
        #[test]
        fn every_inclusion_proof_verifies_and_no_other_leaf_does(size in 1u64..300, pick in any::<u64>()) {
            let tree = leaves(size);
            let index = pick % size;
            let root = root(&tree, size);
            prop_assert_eq!(root, mth(&tree.0));
            let mut builder = RootBuilder::default();
            for leaf in &tree.0 {
                builder.push(*leaf);
            }
            prop_assert_eq!(builder.root(), root);
            let proof = inclusion_proof(&tree, index, size);
            prop_assert!(proof.len() <= 64 - (size - 1).leading_zeros() as usize);
            prop_assert!(verify_inclusion(index, size, &tree.0[index as usize], &proof, &root));
            let other = tree.0[((index + 1) % size) as usize];
            if size > 1 {
                prop_assert!(!verify_inclusion(index, size, &other, &proof, &root));
            }
        }

        #[test]
        fn every_consistency_proof_verifies_and_a_changed_tree_does_not(new in 1u64..300, pick in any::<u64>(), flip in any::<u64>()) {
            let tree = leaves(new);
            let old = 1 + pick % new;
            let (old_root, new_root) = (root(&tree, old), root(&tree, new));
            let proof = consistency_proof(&tree, old, new);
            prop_assert!(verify_consistency(old, new, &old_root, &new_root, &proof));
            // The same sizes over a tree with one earlier leaf changed.
            let mut forked = tree.0.clone();
            let changed = (flip % old) as usize;
            forked[changed] = leaf_hash(b"forged");
            let forked_root = mth(&forked[..old as usize]);
            if old < new {
                prop_assert!(!verify_consistency(old, new, &forked_root, &new_root, &proof));
            }
        }
    }
}
