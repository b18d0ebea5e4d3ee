//! A SHA-256 hasher whose state can be saved and restored, so a chunked upload
//! can resume hashing after a restart or on another instance without reading
//! back what was already stored. Compression uses `sha2::compress256`, which
//! picks the CPU's SHA instructions when present.

use crate::digest::Digest;

const IV: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// Serialized size: 8 state words, a 64-bit length, one length byte, a 64-byte block.
pub const STATE_LEN: usize = 32 + 8 + 1 + 64;

#[derive(Clone)]
pub struct Sha256State {
    h: [u32; 8],
    // Bytes hashed so far, including those still in `buf`.
    len: u64,
    buf: [u8; 64],
    buf_len: usize,
}

impl Default for Sha256State {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt hash state")]
pub struct CorruptState;

impl Sha256State {
    pub fn new() -> Self {
        Sha256State { h: IV, len: 0, buf: [0; 64], buf_len: 0 }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.buf_len > 0 {
            let take = (64 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < 64 {
                return;
            }
            sha2::block_api::compress256(&mut self.h, std::slice::from_ref(&self.buf));
            self.buf_len = 0;
        }
        let full = data.len() / 64 * 64;
        compress_blocks(&mut self.h, &data[..full]);
        let tail = &data[full..];
        self.buf[..tail.len()].copy_from_slice(tail);
        self.buf_len = tail.len();
    }

    /// Finishes a copy of the state (the state itself stays usable).
    pub fn finish(&self) -> Digest {
        let mut h = self.h;
        let bit_len = self.len.wrapping_mul(8);
        let mut block = [0u8; 128];
        block[..self.buf_len].copy_from_slice(&self.buf[..self.buf_len]);
        block[self.buf_len] = 0x80;
        let total = if self.buf_len < 56 { 64 } else { 128 };
        block[total - 8..total].copy_from_slice(&bit_len.to_be_bytes());
        compress_blocks(&mut h, &block[..total]);
        let mut out = [0u8; 32];
        for (i, w) in h.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        Digest::from_sha256_bytes(&out)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(STATE_LEN);
        for w in self.h {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(&self.len.to_be_bytes());
        v.push(self.buf_len as u8);
        v.extend_from_slice(&self.buf);
        v
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, CorruptState> {
        if b.len() != STATE_LEN {
            return Err(CorruptState);
        }
        let mut h = [0u32; 8];
        for (i, w) in h.iter_mut().enumerate() {
            *w = u32::from_be_bytes(b[i * 4..i * 4 + 4].try_into().map_err(|_| CorruptState)?);
        }
        let len = u64::from_be_bytes(b[32..40].try_into().map_err(|_| CorruptState)?);
        let buf_len = b[40] as usize;
        if buf_len >= 64 || len % 64 != buf_len as u64 % 64 {
            return Err(CorruptState);
        }
        let mut buf = [0u8; 64];
        buf.copy_from_slice(&b[41..105]);
        Ok(Sha256State { h, len, buf, buf_len })
    }
}

fn compress_blocks(h: &mut [u32; 8], data: &[u8]) {
    // Views the input as 64-byte blocks without copying.
    let (blocks, rest) = data.as_chunks::<64>();
    debug_assert!(rest.is_empty());
    if !blocks.is_empty() {
        sha2::block_api::compress256(h, blocks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_known_vectors() {
        assert_eq!(
            Sha256State::new().finish().as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut s = Sha256State::new();
        s.update(b"abc");
        assert_eq!(s.finish().as_str(), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    proptest! {
        #[test]
        fn split_and_resumed_hashing_equals_one_shot(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(0usize..3000, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut s = Sha256State::new();
            let mut prev = 0;
            for c in cuts {
                s.update(&data[prev..c]);
                s = Sha256State::from_bytes(&s.to_bytes()).unwrap();
                prev = c;
            }
            s.update(&data[prev..]);
            prop_assert_eq!(s.len(), data.len() as u64);
            prop_assert_eq!(s.finish(), Digest::of_bytes(&data));
        }
    }

    #[test]
    fn corrupt_state_is_rejected() {
        assert!(Sha256State::from_bytes(&[0u8; 3]).is_err());
        let mut b = Sha256State::new().to_bytes();
        b[40] = 70;
        assert!(Sha256State::from_bytes(&b).is_err());
    }
}
