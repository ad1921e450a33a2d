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
        let h = match ip {
            // The address's text as `Display` writes it (the hash's input since v1), without `fmt`.
            IpAddr::V4(v4) => {
                let mut text = [0u8; 15];
                let n = ipv4_text(v4, &mut text);
                blake3::keyed_hash(&self.key, &text[..n])
            }
            v6 => blake3::keyed_hash(&self.key, v6.to_string().as_bytes()),
        };
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(32);
        for b in &h.as_bytes()[..16] {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
        out
    }
}

/// Writes `ip` in dotted decimal into `out`; returns the length.
fn ipv4_text(ip: std::net::Ipv4Addr, out: &mut [u8; 15]) -> usize {
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            out[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            out[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        out[n] = b'0' + octet % 10;
        n += 1;
    }
    n
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
    fn ipv4_text_is_what_display_writes() {
        for ip in ["0.0.0.0", "127.0.0.1", "255.255.255.255", "10.200.3.45", "192.168.100.9", "1.20.100.0"] {
            let ip: std::net::Ipv4Addr = ip.parse().unwrap();
            let mut text = [0u8; 15];
            let n = ipv4_text(ip, &mut text);
            assert_eq!(std::str::from_utf8(&text[..n]).unwrap(), ip.to_string());
        }
        // Hashes are those of the address's text, as before.
        let h = IpHasher::new("salt-a");
        let key = blake3::derive_key(CONTEXT, b"salt-a");
        let want = blake3::keyed_hash(&key, b"203.0.113.7").to_hex()[..32].to_string();
        assert_eq!(h.hash("203.0.113.7".parse().unwrap()), want);
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
