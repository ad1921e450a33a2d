//! `queries connect --duckdb`: the lake's tables as DuckDB views, printed as SQL for an
//! analyst's own DuckDB (the CLI's `-init`, or `duckdb.sql(…)` in Python, where `.df()`
//! hands any answer to pandas). The same names as `queries sql`: the report tables of one
//! window, `<table>_all` with every window at once (a `window` column), `hits` with its UTC
//! `date` and `hour`, and the registry's `offers` (without postback tokens) and `links`.
//! The views are lazy `read_parquet` scans: DuckDB reads only the files, row groups and
//! columns a statement needs, locally or from S3, GCS and Azure through its httpfs.

use std::fmt::Write as _;

use anyhow::{bail, Result};
use lake::layout::{HITS_DIR, REPORTS_DIR, REPORT_TABLES};
use lake::window::Window;

use crate::source::Source;

/// A SQL string literal.
fn lit(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Where DuckDB finds the lake: an absolute folder, or the object store URL (`s3://…`).
fn base(source: &Source) -> Result<String> {
    if let Some(root) = source.lake().local_root() {
        let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        return Ok(abs.display().to_string().trim_end_matches('/').to_string());
    }
    let url = source.lake().url();
    if url.starts_with("memory:") {
        bail!("lake {url} lives in this process only; DuckDB cannot read it");
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The DuckDB script for `window` (the plain table names) and every window (`*_all`).
pub async fn duckdb_script(source: &Source, window: &Window) -> Result<String> {
    let base = base(source)?;
    let zone = source.zone(window).await?;
    let mut out = String::new();
    let _ = writeln!(out, "-- clicktrail lake {}: views for DuckDB, written by `queries connect --duckdb`.", source.lake().url());
    let _ = writeln!(out, "--   duckdb -init views.sql            (the DuckDB CLI)");
    let _ = writeln!(out, "--   duckdb.sql(open('views.sql').read()); duckdb.sql('SELECT * FROM revenue').df()   (Python, pandas)");
    let _ = writeln!(out, "-- Report tables are window {window}; dates are calendar dates in {} (the zone of its pipeline run).", zone.name());
    let _ = writeln!(out, "-- <table>_all: every window, with a \"window\" column (quote it: WINDOW is a keyword).");
    let _ = writeln!(out, "-- hits are raw: a row can appear twice (a retried upload, a compaction under way); dedupe on hit_id.");
    let _ = writeln!(out, "-- offers and links are the registry's CSV as text (offers without postback tokens).");
    if base.starts_with("s3://") {
        // The usual AWS variables, as the rest of clicktrail reads them.
        let mut secret = String::from("CREATE OR REPLACE SECRET clicktrail_s3 (TYPE s3, PROVIDER credential_chain");
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            let host = endpoint.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
            let _ = write!(secret, ", ENDPOINT {}, URL_STYLE 'path', USE_SSL {}", lit(host), !endpoint.starts_with("http://"));
        }
        if let Ok(region) = std::env::var("AWS_REGION").or_else(|_| std::env::var("AWS_DEFAULT_REGION")) {
            let _ = write!(secret, ", REGION {}", lit(&region));
        }
        let _ = writeln!(out, "INSTALL httpfs; LOAD httpfs;\n{secret});");
    } else if base.contains("://") {
        let _ = writeln!(out, "INSTALL httpfs; LOAD httpfs;  -- and a CREATE SECRET for {} (DuckDB's docs: Secrets Manager)", base.split("://").next().unwrap_or(""));
    }
    let windows = source.windows().await?;
    let mut made = Vec::new();
    for table in REPORT_TABLES {
        if !source.report_files(window, table).await?.is_empty() {
            let glob = format!("{base}/{REPORTS_DIR}/window={window}/{table}/date=*/*.parquet");
            let _ = writeln!(out, "CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet({}, union_by_name = true, hive_partitioning = false);", lit(&glob));
            made.push(table.to_string());
        }
        let mut any = false;
        for w in &windows {
            any |= !source.report_files(w, table).await?.is_empty();
        }
        if any {
            let glob = format!("{base}/{REPORTS_DIR}/window=*/{table}/date=*/*.parquet");
            let _ = writeln!(
                out,
                "CREATE OR REPLACE VIEW {table}_all AS SELECT regexp_extract(filename, '/window=([^/]+)/', 1) AS \"window\", * EXCLUDE (filename) FROM read_parquet({}, union_by_name = true, hive_partitioning = false, filename = true);",
                lit(&glob)
            );
            made.push(format!("{table}_all"));
        }
    }
    let has_hits = source.scan_hits_listing().await?;
    if has_hits {
        let glob = format!("{base}/{HITS_DIR}/date=*/hour=*/*.parquet");
        let _ = writeln!(
            out,
            "CREATE OR REPLACE VIEW hits AS SELECT * FROM read_parquet({}, hive_partitioning = true, hive_types = {{'date': DATE, 'hour': INTEGER}}, union_by_name = true);",
            lit(&glob)
        );
        made.push("hits".into());
    }
    for (name, path, exclude) in [("offers", lake::layout::OFFERS_CSV, " EXCLUDE (postback_token)"), ("links", lake::layout::LINKS_CSV, "")] {
        if source.lake().get_optional(&object_store::path::Path::from(path)).await?.is_some() {
            let _ = writeln!(out, "CREATE OR REPLACE VIEW {name} AS SELECT *{exclude} FROM read_csv({}, header = true, all_varchar = true);", lit(&format!("{base}/{path}")));
            made.push(name.into());
        }
    }
    if made.is_empty() {
        bail!("lake {} has no hits, reports or registry yet: nothing to connect to", source.lake().url());
    }
    let _ = writeln!(out, "-- views: {}", made.join(", "));
    Ok(out)
}
