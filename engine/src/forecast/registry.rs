//! An in-memory registry of forecast model versions and their validation metrics.
//!
//! A [`ModelRecord`] says which model (name and version), how it was trained (up to which
//! day, over which calibration window, with which hyper-parameters) and how well it did
//! on which validation period. Records are serde-serialisable so the platform can persist
//! them (the `ml_models` table); this module does no I/O.
//!
//! # Invariants
//! - Versions of one name start at 1 and increase by 1 in registration order; a record's
//!   version is assigned by [`ModelRegistry::register`], never by the caller.
//! - [`ModelRegistry::list`] returns records in registration order; hyper-parameters are
//!   kept in a `BTreeMap`, so serialised records are byte-for-byte reproducible.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Metrics;

/// One registered model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Model name, e.g. "lear-1456" or "lear-ensemble".
    pub name: String,
    /// Version within the name, from 1 (assigned on registration).
    pub version: u32,
    /// Name of the series it was trained on.
    pub series_name: String,
    /// Last day index (of that series) whose prices the model was trained on, if any.
    pub trained_through_day: Option<usize>,
    /// Calibration window in days, for models that have one.
    pub calibration_window_days: Option<usize>,
    /// Hyper-parameters as name → value text.
    pub hyper_parameters: BTreeMap<String, String>,
    /// Validation metrics and the day range `[first, end)` they were computed on.
    pub validation: Option<Validation>,
}

/// Validation metrics of a model over a day range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// First day evaluated.
    pub first_day: usize,
    /// One past the last day evaluated.
    pub end_day: usize,
    /// The metrics.
    pub metrics: Metrics,
}

impl ModelRecord {
    /// A record with no training or validation information yet (version 0 until registered).
    pub fn new(name: &str, series_name: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: 0,
            series_name: series_name.to_owned(),
            trained_through_day: None,
            calibration_window_days: None,
            hyper_parameters: BTreeMap::new(),
            validation: None,
        }
    }
}

/// In-memory model registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelRegistry {
    records: Vec<ModelRecord>,
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `record` as the next version of its name and returns that version.
    pub fn register(&mut self, mut record: ModelRecord) -> u32 {
        let version = self
            .latest(&record.name)
            .map_or(1, |latest| latest.version + 1);
        record.version = version;
        self.records.push(record);
        version
    }

    /// The highest version of `name`.
    pub fn latest(&self, name: &str) -> Option<&ModelRecord> {
        self.records.iter().rev().find(|record| record.name == name)
    }

    /// A given version of `name`.
    pub fn get(&self, name: &str, version: u32) -> Option<&ModelRecord> {
        self.records
            .iter()
            .find(|r| r.name == name && r.version == version)
    }

    /// Every record in registration order.
    pub fn list(&self) -> &[ModelRecord] {
        &self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_per_name_and_latest_is_the_last() {
        let mut registry = ModelRegistry::new();
        let mut lear = ModelRecord::new("lear-56", "NP.csv");
        lear.calibration_window_days = Some(56);
        assert_eq!(registry.register(lear.clone()), 1);
        assert_eq!(registry.register(ModelRecord::new("naive", "NP.csv")), 1);
        lear.trained_through_day = Some(1500);
        assert_eq!(registry.register(lear), 2);
        assert_eq!(registry.latest("lear-56").map(|r| r.version), Some(2));
        assert_eq!(
            registry
                .latest("lear-56")
                .and_then(|r| r.trained_through_day),
            Some(1500)
        );
        assert_eq!(
            registry
                .get("lear-56", 1)
                .and_then(|r| r.trained_through_day),
            None
        );
        assert!(registry.latest("dnn").is_none());
        let names: Vec<_> = registry
            .list()
            .iter()
            .map(|r| (r.name.as_str(), r.version))
            .collect();
        assert_eq!(names, [("lear-56", 1), ("naive", 1), ("lear-56", 2)]);
    }

    #[test]
    fn registry_round_trips_through_serde() {
        let mut registry = ModelRegistry::new();
        let mut record = ModelRecord::new("lear-ensemble", "DE.csv");
        record
            .hyper_parameters
            .insert("criterion".into(), "aic".into());
        record.validation = Some(Validation {
            first_day: 1456,
            end_day: 2184,
            metrics: Metrics {
                mae: 3.5,
                smape_pct: 12.0,
                rmae: 0.4,
                n_periods: 17472,
            },
        });
        registry.register(record);
        let bytes = postcard::to_allocvec(&registry).unwrap();
        let back: ModelRegistry = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, registry);
    }
}
