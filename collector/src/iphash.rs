//! Privacy: the raw client IP is never stored, only a keyed hash of it. The key comes
//! from `--ip-salt`, or from a random salt generated once and kept beside the spool.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

const SALT_FILE: &str = "ip-salt";
const CONTEXT: &str = "clicktrail 2026 client ip hash v1";

#[derive(Clone)]
pub struct IpHasher {
    key: [u8; 32],
}

impl IpHasher {
    pub fn new(salt: &str) -> IpHasher {
        IpHasher { key: blake3::derive_key(CONTEXT, salt.as_bytes()) }
    }

    /// The salt kept in `<spool>/ip-salt`, created (mode 0600) with 32 random bytes when
    /// missing so that hashes stay stable across restarts.
    pub fn load_or_create_salt(spool_dir: &Path) -> std::io::Result<String> {
        let path = spool_dir.join(SALT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(spool_dir)?;
        let salt: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&path)?;
        f.write_all(salt.as_bytes())?;
        f.sync_all()?;
        Ok(salt)
    }

    /// 128 bits of a keyed BLAKE3 hash, hex. IPv4-mapped IPv6 addresses hash as IPv4.
    pub fn hash(&self, ip: IpAddr) -> String {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let h = blake3::keyed_hash(&self.key, ip.to_string().as_bytes());
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(32);
        for b in &h.as_bytes()[..16] {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_and_stable() {
        let a = IpHasher::new("salt-a");
        let b = IpHasher::new("salt-b");
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(a.hash(ip), a.hash(ip));
        assert_ne!(a.hash(ip), b.hash(ip));
        assert!(!a.hash(ip).contains("203"));
        assert_eq!(a.hash(ip).len(), 32);
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(a.hash(ip), a.hash(mapped));
    }

    #[test]
    fn salt_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s1 = IpHasher::load_or_create_salt(dir.path()).unwrap();
        let s2 = IpHasher::load_or_create_salt(dir.path()).unwrap();
        assert_eq!(s1, s2);
        assert_eq!(s1.len(), 64);
    }
}
