//! `collector adjustments import FILE.csv --offer ID` (SPEC §7): a brand's CSV of refunds,
//! rejections and restores, checked row by row with the rules of `/adjust` and written as
//! one Parquet file of adjustment hits, all with `ts` = the time of the import.
//!
//! Nothing is written unless every row is valid. The import is recorded in the ledger
//! `registry/adjustment_imports.csv` (a compare-and-swap update): the same bytes imported
//! again for the same offer write nothing, and rows whose `adjustment_id` is already in an
//! earlier import of the offer are skipped, so a re-exported file that overlaps the last
//! one is safe. The hits file is written (durably) before the ledger row; if another import
//! of the offer lands in between, the file is deleted and the import starts over.

use std::collections::HashSet;

use arrow_array::cast::AsArray;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use lake::registry::{self, AdjustmentImport};
use lake::schema::{hit, HitKind};
use lake::{layout, Lake, LakeError};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use sha2::{Digest, Sha256};

use crate::adjustment::{AdjustmentFields, FieldError};
use crate::hit::Hit;
use crate::sink::{write_hits_file, SinkError};

/// Columns an import file may have (by name, any order); the first two are required.
pub const IMPORT_COLUMNS: [&str; 6] = ["order_id", "action", "amount", "currency", "event", "adjustment_id"];
/// Bad rows listed in one error message; the rest are counted.
const MAX_LISTED_ERRORS: usize = 20;
/// Times an import starts over when other imports of the offer keep landing first.
const ATTEMPTS: usize = 5;

/// One bad row of an import file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub error: FieldError,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{file}: nothing imported: {}", list_rows(.rows))]
    Rows { file: String, rows: Vec<RowError> },
    #[error("there is no offer {0:?} (`collector offers list` shows them)")]
    UnknownOffer(String),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("the ledger names {path}, an earlier import, which cannot be read: {message}")]
    EarlierImport { path: String, message: String },
    #[error("other imports of offer {0:?} kept changing the ledger; try again")]
    Contention(String),
}

fn list_rows(rows: &[RowError]) -> String {
    let mut text: Vec<String> = rows.iter().take(MAX_LISTED_ERRORS).map(|r| format!("line {}: {}", r.line, r.error)).collect();
    if rows.len() > MAX_LISTED_ERRORS {
        text.push(format!("and {} more bad rows", rows.len() - MAX_LISTED_ERRORS));
    }
    text.join("; ")
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// The ledger row written.
    Imported(AdjustmentImport),
    /// The same file was imported for this offer before (its ledger row); nothing written.
    AlreadyImported(AdjustmentImport),
    /// The file has a header and no rows; nothing written or recorded.
    Empty,
}

/// Reads and checks every row; any bad row fails the whole file.
pub fn parse_rows(file: &str, bytes: &[u8], offer: &lake::registry::Offer) -> Result<Vec<Hit>, ImportError> {
    let file_err = |message: String| ImportError::File { file: file.to_string(), message };
    let text = std::str::from_utf8(bytes).map_err(|e| file_err(format!("is not UTF-8 text: {e}")))?;
    // A BOM from spreadsheet exports is not part of the first column's name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let headers = rdr.headers().map_err(|e| file_err(format!("line 1: {e}")))?.clone();
    if headers.is_empty() || headers.iter().all(|h| h.trim().is_empty()) {
        return Err(file_err(format!("line 1 must be a header row with the columns {}", IMPORT_COLUMNS.join(","))));
    }
    let names: Vec<String> = headers.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
    let unknown: Vec<&str> = names.iter().map(String::as_str).filter(|n| !IMPORT_COLUMNS.contains(n)).collect();
    if !unknown.is_empty() {
        return Err(file_err(format!(
            "line 1: unknown column(s) {} (the columns are {})",
            unknown.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", "),
            IMPORT_COLUMNS.join(",")
        )));
    }
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(file_err(format!("line 1: column {n:?} appears twice")));
        }
    }
    for required in &IMPORT_COLUMNS[..2] {
        if !names.iter().any(|n| n == required) {
            return Err(file_err(format!("line 1: missing column {required:?}")));
        }
    }
    let mut hits = Vec::new();
    let mut bad = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| file_err(match e.position() {
            Some(p) => format!("line {}: {e}", p.line()),
            None => e.to_string(),
        }))?;
        let line = rec.position().map_or(0, |p| p.line());
        let mut fields = AdjustmentFields::default();
        for (name, value) in names.iter().zip(rec.iter()) {
            let value = value.trim();
            if let Some(slot) = fields.slot(name) {
                *slot = (!value.is_empty()).then(|| value.to_string());
            }
        }
        let mut h = Hit::new(HitKind::Adjustment, offer.offer_id.clone());
        match fields.apply(offer, &mut h) {
            Ok(()) => hits.push(h),
            Err(error) => bad.push(RowError { line, error }),
        }
    }
    if !bad.is_empty() {
        return Err(ImportError::Rows { file: file.to_string(), rows: bad });
    }
    Ok(hits)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

async fn read_ledger(lake: &Lake) -> Result<Vec<AdjustmentImport>, LakeError> {
    match lake.get_optional(&layout::adjustment_imports()).await? {
        Some(b) if !b.is_empty() => registry::parse_adjustment_imports(&b),
        _ => Ok(Vec::new()),
    }
}

/// The `adjustment_id`s an earlier import wrote. Its hits file, once compaction (`pipeline
/// compact`) has merged it into its hour's compacted file, is found through that file's
/// leaves; the import's rows there are its offer's adjustments stamped with its time.
async fn adjustment_ids_in(lake: &Lake, import: &AdjustmentImport) -> Result<Vec<String>, ImportError> {
    let path = import.hits_file.as_str();
    let err = |message: String| ImportError::EarlierImport { path: path.to_string(), message };
    let location = object_store::path::Path::from(path);
    let (bytes, only_import) = match lake.store().get(&location).await {
        Ok(r) => (r.bytes().await.map_err(|e| err(e.to_string()))?, None),
        Err(object_store::Error::NotFound { .. }) => {
            let Some((_, bytes)) = lake::compact::holder_of(lake, path).await.map_err(|e| err(e.to_string()))? else {
                return Err(err("missing, and no compacted file of its hour holds it".into()));
            };
            let at = DateTime::parse_from_rfc3339(&import.imported_at).map_err(|e| err(format!("imported_at {:?}: {e}", import.imported_at)))?;
            (bytes, Some(at.timestamp_micros()))
        }
        Err(e) => return Err(err(e.to_string())),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| err(e.to_string()))?;
    let columns: &[&str] = if only_import.is_some() { &[hit::ADJUSTMENT_ID, hit::KIND, hit::OFFER_ID, hit::TS] } else { &[hit::ADJUSTMENT_ID] };
    let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
    let mut ids = Vec::new();
    for batch in builder.with_projection(mask).build().map_err(|e| err(e.to_string()))? {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        let Some(col) = batch.column_by_name(hit::ADJUSTMENT_ID) else { continue };
        let col = col.as_string_opt::<i32>().ok_or_else(|| err("adjustment_id is not a string column".into()))?;
        let keep: Vec<bool> = match only_import {
            None => vec![true; batch.num_rows()],
            Some(at) => {
                let strings = |name: &str| batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>().cloned());
                let (Some(kind), Some(offer)) = (strings(hit::KIND), strings(hit::OFFER_ID)) else { continue };
                let ts = batch
                    .column_by_name(hit::TS)
                    .and_then(|c| c.as_primitive_opt::<arrow_array::types::TimestampMicrosecondType>().cloned())
                    .ok_or_else(|| err("ts is not a µs timestamp column".into()))?;
                (0..batch.num_rows())
                    .map(|i| kind.value(i) == HitKind::Adjustment.as_str() && offer.value(i) == import.offer_id && ts.value(i) == at)
                    .collect()
            }
        };
        ids.extend(col.iter().zip(keep).filter(|(_, k)| *k).filter_map(|(s, _)| s).filter(|s| !s.is_empty()).map(str::to_string));
    }
    Ok(ids)
}

/// Gives the hits `ts` and fresh UUIDv7 ids in row order, so that `(ts, hit_id)` orders
/// them as the file does (a reject then a restore of one order stay in that order).
fn stamp(hits: &mut [Hit], ts: DateTime<Utc>) {
    let mut ids: Vec<uuid::Uuid> = hits.iter().map(|_| uuid::Uuid::now_v7()).collect();
    ids.sort();
    for (h, id) in hits.iter_mut().zip(ids) {
        h.ts = ts.timestamp_micros();
        h.hit_id = id.to_string();
    }
}

enum LedgerOutcome {
    Recorded,
    Duplicate(AdjustmentImport),
    /// Another import of the offer was recorded since the ledger was read.
    Changed,
}

/// Imports `bytes` (the file named `file`) as adjustments of `offer_id`.
pub async fn import_adjustments(lake: &Lake, offer_id: &str, file: &str, bytes: &[u8]) -> Result<ImportOutcome, ImportError> {
    let offers = match lake.get_optional(&layout::offers()).await? {
        Some(b) if !b.is_empty() => registry::parse_offers(&b)?,
        _ => Vec::new(),
    };
    let offer = offers.iter().find(|o| o.offer_id == offer_id).ok_or_else(|| ImportError::UnknownOffer(offer_id.to_string()))?;
    let rows = parse_rows(file, bytes, offer)?;
    if rows.is_empty() {
        return Ok(ImportOutcome::Empty);
    }
    let sha256 = sha256_hex(bytes);
    let source = std::path::Path::new(file).file_name().map_or_else(|| file.to_string(), |n| n.to_string_lossy().into_owned());
    for _ in 0..ATTEMPTS {
        let ledger = read_ledger(lake).await?;
        let earlier: Vec<&AdjustmentImport> = ledger.iter().filter(|i| i.offer_id == offer_id).collect();
        if let Some(done) = earlier.iter().find(|i| i.sha256 == sha256) {
            return Ok(ImportOutcome::AlreadyImported((*done).clone()));
        }
        let mut seen_ids = HashSet::new();
        for i in earlier.iter().filter(|i| !i.hits_file.is_empty()) {
            seen_ids.extend(adjustment_ids_in(lake, i).await?);
        }
        let known_imports: HashSet<String> = earlier.iter().map(|i| i.import_id.clone()).collect();
        let mut hits: Vec<Hit> = rows.iter().filter(|h| h.adjustment_id.as_ref().is_none_or(|id| !seen_ids.contains(id))).cloned().collect();
        let skipped = (rows.len() - hits.len()) as u64;
        let now = Utc::now();
        let import_id = uuid::Uuid::now_v7().to_string();
        stamp(&mut hits, now);
        let object = (!hits.is_empty()).then(|| layout::hits_file(now, &format!("adjustments-{import_id}")));
        if let Some(object) = &object {
            let refs: Vec<&Hit> = hits.iter().collect();
            write_hits_file(lake, object, &refs).await?;
        }
        let record = AdjustmentImport {
            import_id,
            offer_id: offer_id.to_string(),
            sha256: sha256.clone(),
            rows: hits.len() as u64,
            skipped,
            hits_file: object.as_ref().map(ToString::to_string).unwrap_or_default(),
            source: source.clone(),
            imported_at: now.to_rfc3339_opts(SecondsFormat::Micros, true),
        };
        let row = record.clone();
        let result = lake
            .update(&layout::adjustment_imports(), move |current| {
                let mut ledger = match current {
                    Some(b) if !b.is_empty() => registry::parse_adjustment_imports(b)?,
                    _ => Vec::new(),
                };
                let same_offer = || ledger.iter().filter(|i| i.offer_id == row.offer_id);
                if let Some(done) = same_offer().find(|i| i.sha256 == row.sha256) {
                    return Ok((None, LedgerOutcome::Duplicate(done.clone())));
                }
                if same_offer().any(|i| !known_imports.contains(&i.import_id)) {
                    return Ok((None, LedgerOutcome::Changed));
                }
                ledger.push(row.clone());
                Ok((Some(Bytes::from(registry::write_adjustment_imports(&ledger))), LedgerOutcome::Recorded))
            })
            .await;
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                remove(lake, object.as_ref()).await;
                return Err(e.into());
            }
        };
        match outcome {
            LedgerOutcome::Recorded => return Ok(ImportOutcome::Imported(record)),
            LedgerOutcome::Duplicate(done) => {
                remove(lake, object.as_ref()).await;
                return Ok(ImportOutcome::AlreadyImported(done));
            }
            LedgerOutcome::Changed => {
                remove(lake, object.as_ref()).await;
                tracing::info!(offer = offer_id, "another import of the offer was recorded first; starting over");
            }
        }
    }
    Err(ImportError::Contention(offer_id.to_string()))
}

/// Deletes a hits file this import wrote and did not record.
async fn remove(lake: &Lake, object: Option<&object_store::path::Path>) {
    let Some(object) = object else { return };
    if let Err(e) = lake.store().delete(object).await {
        tracing::error!(file = %object, error = %e, "cannot delete the hits file of an import that was not recorded; delete it by hand");
    }
}
