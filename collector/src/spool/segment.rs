//! Segment files: a sequence of frames `[len: u32 LE][crc32: u32 LE][payload: hit]`.
//! A segment is named by a UUIDv7 (its creation time), which also names its Parquet
//! files in the lake, so a retried upload overwrites rather than duplicates.
//!
//! A payload is a hit in the binary layout below (its first byte [`BINARY_V1`]), or, in
//! segments written by earlier versions and still read, a JSON object (first byte `{`).
//! JSON cost the click path and the sink about a quarter of the collector's instructions
//! per click (BENCH.md); the binary layout is fields in a fixed order:
//!
//! `[1][kind: u8][ts: i64 LE][amount: 0 | 1 + i64 LE]` and then, for each string field of
//! [`HitRef::STRINGS`] order, `[len: u32 LE][UTF-8 bytes]`, `len` `u32::MAX` for none.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use lake::schema::HitKind;

use crate::hit::{Hit, HitRef};

use super::{OPEN_EXT, SEALED_EXT};

const HEADER: usize = 8;
/// No hit comes near this; a larger length means a torn or corrupt frame.
const MAX_FRAME: usize = 1 << 20;
/// The first byte of a payload in the binary layout.
const BINARY_V1: u8 = 1;
/// The length written for a string field that is not set.
const NONE: u32 = u32::MAX;
pub fn encode_frame(hit: &Hit) -> Vec<u8> {
    let fields = HitRef::of(hit).strings;
    let size = HEADER + 1 + 1 + 8 + 9 + fields.iter().map(|f| 4 + f.map_or(0, str::len)).sum::<usize>();
    let mut frame = Vec::with_capacity(size);
    frame.extend_from_slice(&[0u8; HEADER]);
    frame.push(BINARY_V1);
    frame.push(HitKind::ALL.iter().position(|k| *k == hit.kind).unwrap_or_default() as u8);
    frame.extend_from_slice(&hit.ts.to_le_bytes());
    match hit.amount_micros {
        Some(a) => {
            frame.push(1);
            frame.extend_from_slice(&a.to_le_bytes());
        }
        None => frame.push(0),
    }
    for field in fields {
        match field {
            // A hit's strings are far below 4 GiB (requests are limited to 16 KiB).
            Some(v) => {
                frame.extend_from_slice(&(v.len() as u32).to_le_bytes());
                frame.extend_from_slice(v.as_bytes());
            }
            None => frame.extend_from_slice(&NONE.to_le_bytes()),
        }
    }
    let len = (frame.len() - HEADER) as u32;
    let crc = crc32fast::hash(&frame[HEADER..]);
    frame[0..4].copy_from_slice(&len.to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    frame
}

/// A decoded payload: the binary layout is read in place; JSON (an earlier version's)
/// becomes an owned hit.
enum Payload<'a> {
    Binary(HitRef<'a>),
    Json(Hit),
}

impl Payload<'_> {
    fn as_ref(&self) -> HitRef<'_> {
        match self {
            Payload::Binary(r) => *r,
            Payload::Json(h) => HitRef::of(h),
        }
    }
}

/// The hit in a payload (binary, or JSON from an earlier version); `None` if malformed.
fn decode_payload(payload: &[u8]) -> Option<Hit> {
    decode(payload)?.as_ref().to_hit()
}

fn decode(payload: &[u8]) -> Option<Payload<'_>> {
    match payload.first()? {
        &BINARY_V1 => decode_binary(&payload[1..]).map(Payload::Binary),
        b'{' => serde_json::from_slice(payload).ok().map(Payload::Json),
        _ => None,
    }
}

fn decode_binary(mut p: &[u8]) -> Option<HitRef<'_>> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if p.len() < n {
            return None;
        }
        let (head, rest) = p.split_at(n);
        *p = rest;
        Some(head)
    }
    fn int(p: &mut &[u8]) -> Option<i64> {
        Some(i64::from_le_bytes(take(p, 8)?.try_into().ok()?))
    }
    let kind = *HitKind::ALL.get(usize::from(take(&mut p, 1)?[0]))?;
    let ts = int(&mut p)?;
    let amount_micros = match take(&mut p, 1)?[0] {
        0 => None,
        1 => Some(int(&mut p)?),
        _ => return None,
    };
    let mut strings = [None; HitRef::STRINGS];
    for s in &mut strings {
        let len = u32::from_le_bytes(take(&mut p, 4)?.try_into().ok()?);
        if len != NONE {
            *s = Some(std::str::from_utf8(take(&mut p, len as usize)?).ok()?);
        }
    }
    // Every hit has an id and an offer.
    if !p.is_empty() || strings[0].is_none() || strings[1].is_none() {
        return None;
    }
    Some(HitRef { kind, ts, amount_micros, strings })
}

/// Decodes frames from the start of `buf`; returns the hits and the length of the valid
/// prefix (anything after it is a torn or corrupt tail).
pub fn decode_frames(buf: &[u8]) -> (Vec<Hit>, usize) {
    let mut hits = Vec::new();
    let mut pos = 0;
    while buf.len() - pos >= HEADER {
        let len = u32::from_le_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]]);
        if len == 0 || len > MAX_FRAME || buf.len() - pos - HEADER < len {
            break;
        }
        let payload = &buf[pos + HEADER..pos + HEADER + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        match decode_payload(payload) {
            Some(hit) => hits.push(hit),
            None => break,
        }
        pos += HEADER + len;
    }
    (hits, pos)
}

/// A segment read back from disk.
pub struct SegmentFile {
    pub path: PathBuf,
    pub hits: Vec<Hit>,
    /// Bytes after the last valid frame (0 for an intact segment).
    pub corrupt_tail: u64,
}

impl SegmentFile {
    /// The segment's id (the UUIDv7 in its name).
    pub fn id(&self) -> String {
        self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// A segment read frame by frame, so that no more than a chunk of it is in memory (the
/// sink turns a 64 MiB segment into Parquet a row group at a time). Reading stops at the
/// first torn or corrupt frame, as [`decode_frames`] does.
pub struct SegmentReader {
    file: io::BufReader<File>,
    /// The file's length.
    len: u64,
    /// Bytes of intact frames read so far.
    valid: u64,
    done: bool,
    payload: Vec<u8>,
}

impl SegmentReader {
    pub fn open(path: &Path) -> io::Result<SegmentReader> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(SegmentReader { file: io::BufReader::with_capacity(1 << 16, file), len, valid: 0, done: false, payload: Vec::new() })
    }

    /// The next hit, or `None` at the end of the intact frames.
    pub fn next_hit(&mut self) -> io::Result<Option<Hit>> {
        Ok(self.next_with(|h| h.to_hit())?.flatten())
    }

    /// Hands the next hit, read in place, to `f`; `None` at the end of the intact frames.
    pub fn next_with<T>(&mut self, f: impl FnOnce(&HitRef<'_>) -> T) -> io::Result<Option<T>> {
        if self.done || !self.read_frame()? {
            self.done = true;
            return Ok(None);
        }
        let Some(payload) = decode(&self.payload) else {
            self.done = true;
            return Ok(None);
        };
        self.valid += (HEADER + self.payload.len()) as u64;
        Ok(Some(f(&payload.as_ref())))
    }

    /// Up to `max` more hits (none: the end of the intact frames).
    pub fn next_hits(&mut self, max: usize) -> io::Result<Vec<Hit>> {
        let mut out = Vec::with_capacity(max.min(1 << 16));
        while out.len() < max {
            match self.next_hit()? {
                Some(hit) => out.push(hit),
                None => break,
            }
        }
        Ok(out)
    }

    /// Bytes after the last intact frame read so far: once the reader is at its end, the
    /// segment's corrupt or torn tail (0 for an intact segment).
    pub fn corrupt_tail(&self) -> u64 {
        self.len - self.valid
    }

    /// The length of the intact frames read so far.
    pub fn valid_len(&self) -> u64 {
        self.valid
    }

    /// Reads the next frame's payload into `self.payload`: `false` for none (the end, or a
    /// torn or corrupt frame).
    fn read_frame(&mut self) -> io::Result<bool> {
        if self.len - self.valid < HEADER as u64 {
            return Ok(false);
        }
        let mut header = [0u8; HEADER];
        self.file.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_FRAME || self.len - self.valid - (HEADER as u64) < len as u64 {
            return Ok(false);
        }
        self.payload.resize(len, 0);
        self.file.read_exact(&mut self.payload)?;
        Ok(crc32fast::hash(&self.payload) == crc)
    }
}

pub fn read_segment(path: &Path) -> io::Result<SegmentFile> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    let (hits, valid) = decode_frames(&buf);
    Ok(SegmentFile { path: path.to_path_buf(), hits, corrupt_tail: (buf.len() - valid) as u64 })
}

pub fn new_segment_path(dir: &Path) -> PathBuf {
    dir.join(format!("{}.{OPEN_EXT}", uuid::Uuid::now_v7()))
}

pub fn sealed_path(open: &Path) -> PathBuf {
    open.with_extension(SEALED_EXT)
}

/// Segment files with extension `ext`, oldest first (UUIDv7 names sort by time).
pub fn list(dir: &Path, ext: &str) -> io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
        .collect();
    out.sort();
    Ok(out)
}

/// Creation time in ms since the epoch, from the UUIDv7 name.
pub fn created_ms(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    let id = uuid::Uuid::parse_str(stem).ok()?;
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    Some(secs * 1000 + u64::from(nanos) / 1_000_000)
}

pub struct Recovered {
    pub bytes: u64,
}

/// Seals what an earlier process left: each `.open` segment is cut back to its last
/// intact frame (a torn frame was never acknowledged), fsync'd and renamed `.sealed`; an
/// empty one is removed.
pub fn recover(dir: &Path) -> io::Result<Vec<Recovered>> {
    let mut out = Vec::new();
    for open in list(dir, OPEN_EXT)? {
        // Frame by frame: a 64 MiB segment is not read into memory to find its end.
        let mut reader = SegmentReader::open(&open)?;
        while reader.next_hit()?.is_some() {}
        let valid = reader.valid_len();
        if valid == 0 {
            std::fs::remove_file(&open)?;
            continue;
        }
        if reader.corrupt_tail() > 0 {
            tracing::warn!(segment = %open.display(), torn_bytes = reader.corrupt_tail(), "cut a torn tail off a spool segment");
            let f = OpenOptions::new().write(true).open(&open)?;
            f.set_len(valid)?;
            f.sync_all()?;
        } else {
            File::open(&open)?.sync_all()?;
        }
        std::fs::rename(&open, sealed_path(&open))?;
    }
    File::open(dir)?.sync_all()?;
    for sealed in list(dir, SEALED_EXT)? {
        out.push(Recovered { bytes: std::fs::metadata(&sealed)?.len() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lake::schema::HitKind;

    #[test]
    fn torn_tail_is_cut_and_intact_frames_survive() {
        let dir = tempfile::tempdir().unwrap();
        let a = Hit::new(HitKind::Click, "o".into());
        let b = Hit::new(HitKind::Postback, "o".into());
        let mut bytes = encode_frame(&a);
        bytes.extend(encode_frame(&b));
        let whole = bytes.len();
        bytes.extend(&encode_frame(&a)[..10]);
        let path = dir.path().join(format!("{}.open", uuid::Uuid::now_v7()));
        std::fs::write(&path, &bytes).unwrap();
        let rec = recover(dir.path()).unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].bytes, whole as u64);
        let sealed = list(dir.path(), SEALED_EXT).unwrap();
        let seg = read_segment(&sealed[0]).unwrap();
        assert_eq!(seg.hits, vec![a, b]);
        assert_eq!(seg.corrupt_tail, 0);
        assert!(created_ms(&sealed[0]).is_some());
    }

    #[test]
    fn the_reader_streams_what_decode_frames_reads_and_stops_at_the_same_tail() {
        let dir = tempfile::tempdir().unwrap();
        let hits: Vec<Hit> = (0..10).map(|i| Hit::new(if i % 3 == 0 { HitKind::Pixel } else { HitKind::Click }, format!("o{i}"))).collect();
        let mut bytes: Vec<u8> = hits.iter().flat_map(encode_frame).collect();
        let whole = bytes.len();
        bytes.extend(&encode_frame(&hits[0])[..12]);
        let path = dir.path().join("s.sealed");
        std::fs::write(&path, &bytes).unwrap();
        let mut reader = SegmentReader::open(&path).unwrap();
        let mut read = Vec::new();
        loop {
            let chunk = reader.next_hits(3).unwrap();
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() <= 3);
            read.extend(chunk);
        }
        assert_eq!(read, hits);
        assert_eq!(reader.valid_len(), whole as u64);
        assert_eq!(reader.corrupt_tail(), 12);
        assert_eq!(decode_frames(&bytes), (hits, whole));
    }

    /// A frame as versions before the binary layout wrote it.
    fn json_frame(hit: &Hit) -> Vec<u8> {
        let payload = serde_json::to_vec(hit).unwrap();
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend(crc32fast::hash(&payload).to_le_bytes());
        frame.extend(payload);
        frame
    }

    #[test]
    fn binary_frames_carry_every_field_and_json_frames_of_earlier_versions_still_read() {
        let bare = Hit::new(HitKind::Click, "o".into());
        let mut full = Hit::new(HitKind::Adjustment, "offer é".into());
        full.amount_micros = Some(-12_345_678);
        let text = |s: &str| Some(s.to_string());
        (full.member_id, full.link_code, full.click_id, full.visitor_id) = (text("m"), text("c"), text("k"), text("v"));
        (full.event, full.order_id, full.currency, full.user_agent) = (text("purchase"), text("o-1"), text("EUR"), text("Mozilla/5.0 \"x\""));
        (full.referer, full.ip_hash, full.params, full.action) = (text(""), text("ab"), text("a=%20&b=2"), text("refund"));
        (full.adjustment_id, full.coupon) = (text("adj"), text("SAVE10"));
        let kinds = [HitKind::Pixel, HitKind::Postback];
        let mut hits = vec![bare, full];
        hits.extend(kinds.map(|k| Hit::new(k, "p".into())));
        let mut bytes: Vec<u8> = hits.iter().flat_map(encode_frame).collect();
        bytes.extend(json_frame(&hits[1]));
        bytes.extend(json_frame(&hits[0]));
        let mut want = hits.clone();
        want.extend([hits[1].clone(), hits[0].clone()]);
        assert_eq!(decode_frames(&bytes), (want, bytes.len()));
        // A payload of neither layout, or a binary one cut short, is corrupt.
        assert_eq!(decode_payload(b"\x02abc"), None);
        let frame = encode_frame(&hits[1]);
        assert_eq!(decode_payload(&frame[HEADER..frame.len() - 1]), None);
    }

    #[test]
    fn flipped_byte_stops_decoding() {
        let a = Hit::new(HitKind::Click, "o".into());
        let mut bytes = encode_frame(&a);
        let n = bytes.len();
        bytes[n - 2] ^= 1;
        assert_eq!(decode_frames(&bytes).1, 0);
    }
}
