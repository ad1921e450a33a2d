//! Prometheus metrics: hits by kind, rejects by reason, spool bytes, upload lag.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use lake::schema::HitKind;

type Label = [(&'static str, &'static str); 1];

pub struct Metrics {
    registry: Registry,
    hits: Family<Label, Counter>,
    /// The counters of `hits`, one per kind in [`HitKind::ALL`] order: counting a hit is
    /// one atomic add, without the family's lock and label hashing.
    hit_counters: [Counter; 4],
    rejects: Family<Label, Counter>,
    uploaded_hits: Counter,
    upload_failures: Counter,
    spool_bytes: Gauge,
    spool_max_bytes: Gauge,
    upload_lag: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("clicktrail");
        let hits = Family::<Label, Counter>::default();
        let rejects = Family::<Label, Counter>::default();
        let uploaded_hits = Counter::default();
        let upload_failures = Counter::default();
        let spool_bytes = Gauge::default();
        let spool_max_bytes = Gauge::default();
        let upload_lag = Gauge::default();
        registry.register("hits", "Hits recorded in the spool, by kind", hits.clone());
        registry.register("rejects", "Requests refused, by reason", rejects.clone());
        registry.register("uploaded_hits", "Hits written to the lake as Parquet", uploaded_hits.clone());
        registry.register("upload_failures", "Failed attempts to upload spool segments", upload_failures.clone());
        registry.register("spool_bytes", "Bytes held in the local spool", spool_bytes.clone());
        registry.register("spool_max_bytes", "Spool capacity before hits are refused", spool_max_bytes.clone());
        registry.register("upload_lag_seconds", "Age of the oldest spool segment not yet in the lake", upload_lag.clone());
        let hit_counters = HitKind::ALL.map(|kind| hits.get_or_create(&[("kind", kind.as_str())]).clone());
        Metrics { registry, hits, hit_counters, rejects, uploaded_hits, upload_failures, spool_bytes, spool_max_bytes, upload_lag }
    }

    pub fn hit(&self, kind: HitKind) {
        match HitKind::ALL.iter().position(|k| *k == kind) {
            Some(i) => self.hit_counters[i].inc(),
            None => self.hits.get_or_create(&[("kind", kind.as_str())]).inc(),
        };
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejects.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn uploaded(&self, hits: u64) {
        self.uploaded_hits.inc_by(hits);
    }

    pub fn upload_failed(&self) {
        self.upload_failures.inc();
    }

    /// Renders the text exposition format, with the spool gauges as of now.
    pub fn render(&self, spool_bytes: u64, spool_max: u64, lag_seconds: i64) -> String {
        self.spool_bytes.set(i64::try_from(spool_bytes).unwrap_or(i64::MAX));
        self.spool_max_bytes.set(i64::try_from(spool_max).unwrap_or(i64::MAX));
        self.upload_lag.set(lag_seconds);
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
