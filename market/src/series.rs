//! Day-ahead price series with exogenous day-ahead forecasts, parsed from CSV text.
//!
//! A [`PriceSeries`] is what the forecasters in `voltex-engine` read: one row per delivery
//! period (hourly, 30-min or 15-min), whole days only, each row a local timestamp, an
//! exact price ([`Decimal`], as written in the file: PJM has 6 decimals, so nothing is
//! forced onto the 0.01 tick grid here) and zero or more exogenous values (day-ahead
//! forecasts of load, wind, ...) as `f64`.
//!
//! [`PriceSeries::parse_csv`] takes the file's name (only for error messages) and its
//! text: this crate does no I/O, so the caller reads the file. The file has a header row,
//! a timestamp column, a price column and any number of exogenous columns whose names
//! vary from file to file; [`SeriesLayout`] chooses them by name or by position, and by
//! default the first column is the timestamp, the next one the price and the rest are
//! exogenous. Header names are trimmed (NP and PJM have `" Price"`), and the timestamp
//! column may have an empty header (DE).
//!
//! Timestamps are local time as in the file, with DST pre-processed so that every day has
//! the same number of periods (true of the epftoolbox benchmark files). The step between
//! rows is taken from the first two rows and must be 15, 30 or 60 minutes.
//!
//! Nothing is skipped silently: a bad row gives a [`SeriesError`] naming the file, the
//! 1-based line and the column. Only empty lines at the very end of the text are allowed.
//! Fields are split on `,`; surrounding double quotes are removed, but quoted fields
//! containing commas are not supported (they show up as a ragged-row error).
//!
//! # Invariants
//! - `timestamps`, `prices`, `prices_f64` and every exogenous column have the same length,
//!   a positive multiple of `periods_per_day`.
//! - The first timestamp is at 00:00; consecutive timestamps differ by exactly one step
//!   (no gaps, no duplicates, strictly increasing), and `periods_per_day * step = 24 h`.
//! - `prices_f64[i]` is the nearest `f64` to `prices[i]`; every exogenous value is finite.
//!
//! Fields are private and read through getters, so these invariants hold for every value
//! of the type; [`PriceSeries::check_invariants`] asserts them.

use std::str::FromStr;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Weekday};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// Number of days in the standard test period of Lago et al. (2021): 104 weeks.
pub const STANDARD_TEST_DAYS: usize = 728;

/// How to pick one column of the file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ColumnChoice {
    /// The default position for this role (see [`SeriesLayout`]).
    #[default]
    Default,
    /// The column whose trimmed header equals this name exactly.
    ByName(String),
    /// The column at this 0-based position.
    ByIndex(usize),
}

/// Which columns are exogenous inputs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ExogenousChoice {
    /// Every column that is neither the timestamp nor the price, in file order.
    #[default]
    AllOthers,
    /// No exogenous columns.
    None,
    /// The columns with these (trimmed) header names, in this order.
    ByNames(Vec<String>),
    /// The columns at these 0-based positions, in this order.
    ByIndices(Vec<usize>),
}

/// Which column of the file plays which role.
///
/// Defaults: timestamp in column 0, price in the first column after the timestamp, every
/// other column exogenous.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeriesLayout {
    /// The timestamp column (default: column 0).
    pub timestamp_column: ColumnChoice,
    /// The price column (default: the first column after the timestamp column).
    pub price_column: ColumnChoice,
    /// The exogenous columns (default: all the others).
    pub exogenous: ExogenousChoice,
}

/// Why a price series could not be parsed or built.
///
/// Lines are 1-based and count the header as line 1; columns are 1-based and come with
/// their header name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    /// The text has no header line.
    #[error("{file}: empty file (no header line)")]
    EmptyFile {
        /// File name as given by the caller.
        file: String,
    },
    /// The header is there but no data row follows.
    #[error("{file}: no data rows after the header")]
    NoRows {
        /// File name as given by the caller.
        file: String,
    },
    /// A price or exogenous column has an empty header name.
    #[error("{file}:{line}: column {column} has no name in the header")]
    MissingColumnName {
        /// File name as given by the caller.
        file: String,
        /// Line of the header (1).
        line: usize,
        /// 1-based column number.
        column: usize,
    },
    /// Two columns have the same (trimmed) header name.
    #[error("{file}:{line}: column {column} repeats the name {name:?}")]
    DuplicateColumnName {
        /// File name as given by the caller.
        file: String,
        /// Line of the header (1).
        line: usize,
        /// 1-based column number of the second occurrence.
        column: usize,
        /// The repeated name.
        name: String,
    },
    /// The layout names a column that is not in the header.
    #[error("{file}: no column named {name:?} (header has {available:?})")]
    UnknownColumn {
        /// File name as given by the caller.
        file: String,
        /// The name asked for.
        name: String,
        /// The trimmed header names.
        available: Vec<String>,
    },
    /// The layout asks for a column position past the end of the header.
    #[error("{file}: column index {index} out of range (header has {n_columns} columns)")]
    ColumnOutOfRange {
        /// File name as given by the caller.
        file: String,
        /// The 0-based position asked for.
        index: usize,
        /// Number of columns in the header.
        n_columns: usize,
    },
    /// The layout gives one column two roles.
    #[error("{file}: column {column} ({name:?}) is chosen for two roles")]
    ColumnChosenTwice {
        /// File name as given by the caller.
        file: String,
        /// 1-based column number.
        column: usize,
        /// Its header name.
        name: String,
    },
    /// A data row has a different number of fields than the header.
    #[error("{file}:{line}: {found} fields, the header has {expected}")]
    RaggedRow {
        /// File name as given by the caller.
        file: String,
        /// 1-based line number.
        line: usize,
        /// Number of header columns.
        expected: usize,
        /// Number of fields on this line.
        found: usize,
    },
    /// A timestamp cell is not `YYYY-MM-DD HH:MM[:SS]` (or with a `T`).
    #[error("{file}:{line}: column {column} ({name:?}): bad timestamp {text:?}")]
    BadTimestamp {
        /// File name as given by the caller.
        file: String,
        /// 1-based line number.
        line: usize,
        /// 1-based column number.
        column: usize,
        /// Header name of the column.
        name: String,
        /// The cell as written.
        text: String,
    },
    /// A price or exogenous cell is not a finite decimal number.
    #[error("{file}:{line}: column {column} ({name:?}): not a finite number: {text:?}")]
    BadNumber {
        /// File name as given by the caller.
        file: String,
        /// 1-based line number.
        line: usize,
        /// 1-based column number.
        column: usize,
        /// Header name of the column.
        name: String,
        /// The cell as written.
        text: String,
    },
    /// The first two rows are not 15, 30 or 60 minutes apart.
    #[error("{file}:{line}: unsupported step of {step_minutes} min (need 15, 30 or 60)")]
    UnsupportedStep {
        /// File name as given by the caller.
        file: String,
        /// 1-based line of the second row.
        line: usize,
        /// The step found, in minutes (may be zero or negative).
        step_minutes: i64,
    },
    /// A timestamp equals the previous one.
    #[error("{file}:{line}: duplicate timestamp {timestamp}")]
    DuplicateTimestamp {
        /// File name as given by the caller.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The repeated timestamp.
        timestamp: NaiveDateTime,
    },
    /// A timestamp is not exactly one step after the previous one (gap or disorder).
    #[error("{file}:{line}: timestamp {found} but {expected} expected (gap or disorder)")]
    IrregularStep {
        /// File name as given by the caller.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The timestamp one step after the previous row.
        expected: NaiveDateTime,
        /// The timestamp on this line.
        found: NaiveDateTime,
    },
    /// The first row is not at 00:00, so the series does not start with a whole day.
    #[error("{file}:{line}: first row at {timestamp}, a series must start at 00:00")]
    DayStartNotMidnight {
        /// File name as given by the caller.
        file: String,
        /// 1-based line number of the first data row.
        line: usize,
        /// Its timestamp.
        timestamp: NaiveDateTime,
    },
    /// The number of rows is not a whole number of days.
    #[error("{file}: {n_rows} rows is not a whole number of days of {periods_per_day} periods")]
    PartialDay {
        /// File name as given by the caller.
        file: String,
        /// Number of data rows.
        n_rows: usize,
        /// Periods per day implied by the step.
        periods_per_day: usize,
    },
    /// Parts given to [`PriceSeries::from_parts`] have different lengths.
    #[error("{file}: {what} has {found} values, {expected} expected")]
    LengthMismatch {
        /// Series name.
        file: String,
        /// Which part.
        what: String,
        /// Expected length.
        expected: usize,
        /// Actual length.
        found: usize,
    },
    /// A value given to [`PriceSeries::from_parts`] is NaN or infinite.
    #[error("{file}: exogenous column {column} ({name:?}) row {row} is not finite")]
    NonFinite {
        /// Series name.
        file: String,
        /// 0-based exogenous column index.
        column: usize,
        /// Its name.
        name: String,
        /// 0-based row.
        row: usize,
    },
}

/// A day-ahead price series: whole days of equally spaced periods, exact prices, and
/// exogenous day-ahead forecasts. See the [module docs](self) for the invariants.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceSeries {
    name: String,
    price_name: String,
    periods_per_day: usize,
    timestamps: Vec<NaiveDateTime>,
    prices: Vec<Decimal>,
    prices_f64: Vec<f64>,
    exogenous_names: Vec<String>,
    exogenous: Vec<Vec<f64>>,
}

impl PriceSeries {
    /// Parses CSV text of the shape described in the [module docs](self).
    ///
    /// `file` is used only in error messages.
    ///
    /// # Errors
    /// A [`SeriesError`] naming the file, and where it applies the line and column, for an
    /// empty file, a bad header or layout, a ragged row, a bad timestamp or number, an
    /// unsupported step, a gap, a duplicate, a first row not at midnight or a partial day.
    pub fn parse_csv(file: &str, text: &str, layout: &SeriesLayout) -> Result<Self, SeriesError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines: Vec<&str> = text.lines().collect();
        while lines.last().is_some_and(|line| line.trim().is_empty()) {
            lines.pop();
        }
        let Some((header_line, data_lines)) = lines.split_first() else {
            return Err(SeriesError::EmptyFile {
                file: file.to_owned(),
            });
        };
        let header: Vec<String> = split_fields(header_line)
            .map(|f| f.trim().to_owned())
            .collect();
        let columns = Columns::resolve(file, &header, layout)?;
        if data_lines.is_empty() {
            return Err(SeriesError::NoRows {
                file: file.to_owned(),
            });
        }

        let n_rows = data_lines.len();
        let mut timestamps = Vec::with_capacity(n_rows);
        let mut prices = Vec::with_capacity(n_rows);
        let mut exogenous = vec![Vec::with_capacity(n_rows); columns.exogenous.len()];
        let mut fields: Vec<&str> = Vec::with_capacity(header.len());
        for (row_idx, line) in data_lines.iter().enumerate() {
            let line_no = row_idx + 2;
            fields.clear();
            fields.extend(split_fields(line).map(str::trim));
            if fields.len() != header.len() {
                return Err(SeriesError::RaggedRow {
                    file: file.to_owned(),
                    line: line_no,
                    expected: header.len(),
                    found: fields.len(),
                });
            }
            let cell = |column: usize| CellRef {
                file,
                line: line_no,
                column,
                header: &header,
            };
            let ts_col = columns.timestamp;
            timestamps.push(parse_timestamp(fields[ts_col]).ok_or_else(|| {
                let c = cell(ts_col);
                SeriesError::BadTimestamp {
                    file: c.file.to_owned(),
                    line: c.line,
                    column: c.column + 1,
                    name: c.header[c.column].clone(),
                    text: fields[ts_col].to_owned(),
                }
            })?);
            prices.push(
                parse_decimal(fields[columns.price])
                    .ok_or_else(|| cell(columns.price).bad_number(fields[columns.price]))?,
            );
            for (values, &col) in exogenous.iter_mut().zip(&columns.exogenous) {
                let value = fields[col]
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| cell(col).bad_number(fields[col]))?;
                values.push(value);
            }
        }

        let periods_per_day = check_timeline(file, &timestamps)?;
        let exogenous_names = columns
            .exogenous
            .iter()
            .map(|&c| header[c].clone())
            .collect();
        let series = Self::assemble(
            file,
            header[columns.price].clone(),
            periods_per_day,
            timestamps,
            prices,
            exogenous_names,
            exogenous,
        );
        series.check_invariants();
        Ok(series)
    }

    /// Builds a series from its parts (for synthetic data, tests and what-if copies).
    ///
    /// The timeline is checked as in [`PriceSeries::parse_csv`]; errors name `name` as the
    /// file and count lines as if a header preceded the rows.
    ///
    /// # Errors
    /// [`SeriesError::LengthMismatch`] if the parts differ in length,
    /// [`SeriesError::NonFinite`] for a NaN or infinite exogenous value, and the timeline
    /// errors of [`PriceSeries::parse_csv`].
    pub fn from_parts(
        name: &str,
        price_name: &str,
        timestamps: Vec<NaiveDateTime>,
        prices: Vec<Decimal>,
        exogenous_names: Vec<String>,
        exogenous: Vec<Vec<f64>>,
    ) -> Result<Self, SeriesError> {
        let mismatch = |what: String, expected: usize, found: usize| SeriesError::LengthMismatch {
            file: name.to_owned(),
            what,
            expected,
            found,
        };
        if timestamps.is_empty() {
            return Err(SeriesError::NoRows {
                file: name.to_owned(),
            });
        }
        if prices.len() != timestamps.len() {
            return Err(mismatch("prices".into(), timestamps.len(), prices.len()));
        }
        if exogenous.len() != exogenous_names.len() {
            return Err(mismatch(
                "exogenous names".into(),
                exogenous.len(),
                exogenous_names.len(),
            ));
        }
        for (column, (values, col_name)) in exogenous.iter().zip(&exogenous_names).enumerate() {
            if values.len() != timestamps.len() {
                let what = format!("exogenous column {col_name:?}");
                return Err(mismatch(what, timestamps.len(), values.len()));
            }
            if let Some(row) = values.iter().position(|v| !v.is_finite()) {
                return Err(SeriesError::NonFinite {
                    file: name.to_owned(),
                    column,
                    name: col_name.clone(),
                    row,
                });
            }
        }
        let periods_per_day = check_timeline(name, &timestamps)?;
        let series = Self::assemble(
            name,
            price_name.to_owned(),
            periods_per_day,
            timestamps,
            prices,
            exogenous_names,
            exogenous,
        );
        series.check_invariants();
        Ok(series)
    }

    fn assemble(
        name: &str,
        price_name: String,
        periods_per_day: usize,
        timestamps: Vec<NaiveDateTime>,
        prices: Vec<Decimal>,
        exogenous_names: Vec<String>,
        exogenous: Vec<Vec<f64>>,
    ) -> Self {
        // Every Decimal (at most 96 bits of mantissa) has a finite nearest f64.
        let prices_f64 = prices
            .iter()
            .map(|p| p.to_f64().unwrap_or(f64::NAN))
            .collect();
        Self {
            name: name.to_owned(),
            price_name,
            periods_per_day,
            timestamps,
            prices,
            prices_f64,
            exogenous_names,
            exogenous,
        }
    }

    /// Asserts the invariants listed in the [module docs](self).
    ///
    /// # Panics
    /// If an invariant is broken (a bug in this module).
    pub fn check_invariants(&self) {
        let n = self.timestamps.len();
        assert!(n > 0 && self.periods_per_day > 0);
        assert_eq!(n % self.periods_per_day, 0);
        assert_eq!(self.prices.len(), n);
        assert_eq!(self.prices_f64.len(), n);
        assert_eq!(self.exogenous.len(), self.exogenous_names.len());
        assert!(self.exogenous.iter().all(|c| c.len() == n));
        assert!(self.exogenous.iter().flatten().all(|v| v.is_finite()));
        assert!(self.prices_f64.iter().all(|v| v.is_finite()));
        assert_eq!(self.timestamps[0].time(), NaiveTime::MIN);
        let step = TimeDelta::minutes(24 * 60 / self.periods_per_day as i64);
        assert!(self.timestamps.windows(2).all(|w| w[1] - w[0] == step));
    }

    /// The series name (the file name given to [`PriceSeries::parse_csv`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The trimmed header of the price column.
    pub fn price_name(&self) -> &str {
        &self.price_name
    }

    /// Periods per day: 24 for hourly data, 96 for 15-minute data.
    pub fn periods_per_day(&self) -> usize {
        self.periods_per_day
    }

    /// Number of whole days.
    pub fn n_days(&self) -> usize {
        self.timestamps.len() / self.periods_per_day
    }

    /// Number of periods (rows).
    pub fn n_periods(&self) -> usize {
        self.timestamps.len()
    }

    /// Local timestamps as in the file, one per period.
    pub fn timestamps(&self) -> &[NaiveDateTime] {
        &self.timestamps
    }

    /// Exact prices, one per period.
    pub fn prices(&self) -> &[Decimal] {
        &self.prices
    }

    /// Prices as `f64` (the nearest `f64` to each exact price), for models.
    pub fn prices_f64(&self) -> &[f64] {
        &self.prices_f64
    }

    /// Trimmed header names of the exogenous columns, in layout order.
    pub fn exogenous_names(&self) -> &[String] {
        &self.exogenous_names
    }

    /// Exogenous columns, each one value per period.
    pub fn exogenous(&self) -> &[Vec<f64>] {
        &self.exogenous
    }

    /// Exact prices of day `day`.
    ///
    /// # Panics
    /// If `day >= n_days()`.
    pub fn day_prices(&self, day: usize) -> &[Decimal] {
        &self.prices[self.day_range(day)]
    }

    /// Prices of day `day` as `f64`.
    ///
    /// # Panics
    /// If `day >= n_days()`.
    pub fn day_prices_f64(&self, day: usize) -> &[f64] {
        &self.prices_f64[self.day_range(day)]
    }

    /// Values of exogenous column `column` on day `day`.
    ///
    /// # Panics
    /// If `column` or `day` is out of range.
    pub fn day_exogenous(&self, column: usize, day: usize) -> &[f64] {
        &self.exogenous[column][self.day_range(day)]
    }

    /// The local date of day `day`.
    ///
    /// # Panics
    /// If `day >= n_days()`.
    pub fn date(&self, day: usize) -> NaiveDate {
        self.timestamps[day * self.periods_per_day].date()
    }

    /// The weekday of day `day` (from its local date).
    ///
    /// # Panics
    /// If `day >= n_days()`.
    pub fn weekday(&self, day: usize) -> Weekday {
        chrono::Datelike::weekday(&self.date(day))
    }

    /// The day index of `date`, if the series covers it.
    pub fn day_index_of(&self, date: NaiveDate) -> Option<usize> {
        let offset = (date - self.date(0)).num_days();
        usize::try_from(offset)
            .ok()
            .filter(|&day| day < self.n_days())
    }

    /// The first day of a test period made of the last `n_test_days` days
    /// ([`STANDARD_TEST_DAYS`] for the standard split), or `None` if the series is not
    /// longer than that.
    pub fn test_period_start_day(&self, n_test_days: usize) -> Option<usize> {
        self.n_days()
            .checked_sub(n_test_days)
            .filter(|&start| start > 0)
    }

    fn day_range(&self, day: usize) -> std::ops::Range<usize> {
        assert!(
            day < self.n_days(),
            "day {day} out of range ({} days)",
            self.n_days()
        );
        day * self.periods_per_day..(day + 1) * self.periods_per_day
    }
}

/// Column positions (0-based) of each role, after resolving a [`SeriesLayout`].
struct Columns {
    timestamp: usize,
    price: usize,
    exogenous: Vec<usize>,
}

impl Columns {
    fn resolve(file: &str, header: &[String], layout: &SeriesLayout) -> Result<Self, SeriesError> {
        for (idx, name) in header.iter().enumerate() {
            if !name.is_empty() && header[..idx].contains(name) {
                return Err(SeriesError::DuplicateColumnName {
                    file: file.to_owned(),
                    line: 1,
                    column: idx + 1,
                    name: name.clone(),
                });
            }
        }
        let find = |choice: &ColumnChoice, default: usize| -> Result<usize, SeriesError> {
            match choice {
                ColumnChoice::Default | ColumnChoice::ByIndex(_) => {
                    let index = match choice {
                        ColumnChoice::ByIndex(index) => *index,
                        _ => default,
                    };
                    if index < header.len() {
                        Ok(index)
                    } else {
                        Err(SeriesError::ColumnOutOfRange {
                            file: file.to_owned(),
                            index,
                            n_columns: header.len(),
                        })
                    }
                }
                ColumnChoice::ByName(name) => header
                    .iter()
                    .position(|h| h == name.trim())
                    .ok_or_else(|| SeriesError::UnknownColumn {
                        file: file.to_owned(),
                        name: name.clone(),
                        available: header.to_vec(),
                    }),
            }
        };
        let timestamp = find(&layout.timestamp_column, 0)?;
        let price = find(&layout.price_column, if timestamp == 0 { 1 } else { 0 })?;
        let exogenous = match &layout.exogenous {
            ExogenousChoice::AllOthers => (0..header.len())
                .filter(|&c| c != timestamp && c != price)
                .collect(),
            ExogenousChoice::None => Vec::new(),
            ExogenousChoice::ByNames(names) => names
                .iter()
                .map(|name| find(&ColumnChoice::ByName(name.clone()), 0))
                .collect::<Result<_, _>>()?,
            ExogenousChoice::ByIndices(indices) => indices
                .iter()
                .map(|&index| find(&ColumnChoice::ByIndex(index), 0))
                .collect::<Result<_, _>>()?,
        };
        let mut used = vec![timestamp, price];
        for &column in &exogenous {
            if used.contains(&column) {
                return Err(SeriesError::ColumnChosenTwice {
                    file: file.to_owned(),
                    column: column + 1,
                    name: header[column].clone(),
                });
            }
            used.push(column);
        }
        if timestamp == price {
            return Err(SeriesError::ColumnChosenTwice {
                file: file.to_owned(),
                column: price + 1,
                name: header[price].clone(),
            });
        }
        // The timestamp column may be unnamed (DE.csv); value columns need a name.
        for &column in used.iter().skip(1) {
            if header[column].is_empty() {
                return Err(SeriesError::MissingColumnName {
                    file: file.to_owned(),
                    line: 1,
                    column: column + 1,
                });
            }
        }
        Ok(Self {
            timestamp,
            price,
            exogenous,
        })
    }
}

/// Location of one cell, for error messages.
struct CellRef<'a> {
    file: &'a str,
    line: usize,
    column: usize,
    header: &'a [String],
}

impl CellRef<'_> {
    fn bad_number(&self, text: &str) -> SeriesError {
        SeriesError::BadNumber {
            file: self.file.to_owned(),
            line: self.line,
            column: self.column + 1,
            name: self.header[self.column].clone(),
            text: text.to_owned(),
        }
    }
}

fn split_fields(line: &str) -> impl Iterator<Item = &str> {
    line.split(',').map(|field| {
        let field = field.trim_end_matches('\r');
        let trimmed = field.trim();
        trimmed
            .strip_prefix('"')
            .and_then(|f| f.strip_suffix('"'))
            .unwrap_or(field)
    })
}

fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    const FORMATS: [&str; 4] = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ];
    FORMATS
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
}

fn parse_decimal(text: &str) -> Option<Decimal> {
    if text.is_empty() {
        return None;
    }
    Decimal::from_str(text).ok().or_else(|| {
        if text.contains(['e', 'E']) {
            Decimal::from_scientific(text).ok()
        } else {
            None
        }
    })
}

/// Checks the timeline and returns the number of periods per day.
fn check_timeline(file: &str, timestamps: &[NaiveDateTime]) -> Result<usize, SeriesError> {
    const FIRST_LINE: usize = 2;
    let first = timestamps[0];
    if first.time() != NaiveTime::MIN {
        return Err(SeriesError::DayStartNotMidnight {
            file: file.to_owned(),
            line: FIRST_LINE,
            timestamp: first,
        });
    }
    let Some(&second) = timestamps.get(1) else {
        return Err(SeriesError::PartialDay {
            file: file.to_owned(),
            n_rows: 1,
            periods_per_day: 0,
        });
    };
    let step = second - first;
    let step_minutes = step.num_minutes();
    if second == first {
        return Err(SeriesError::DuplicateTimestamp {
            file: file.to_owned(),
            line: FIRST_LINE + 1,
            timestamp: second,
        });
    }
    if ![15, 30, 60].contains(&step_minutes) || step != TimeDelta::minutes(step_minutes) {
        return Err(SeriesError::UnsupportedStep {
            file: file.to_owned(),
            line: FIRST_LINE + 1,
            step_minutes,
        });
    }
    for (idx, pair) in timestamps.windows(2).enumerate() {
        let expected = pair[0] + step;
        if pair[1] != expected {
            let line = FIRST_LINE + idx + 1;
            return Err(if pair[1] == pair[0] {
                SeriesError::DuplicateTimestamp {
                    file: file.to_owned(),
                    line,
                    timestamp: pair[1],
                }
            } else {
                SeriesError::IrregularStep {
                    file: file.to_owned(),
                    line,
                    expected,
                    found: pair[1],
                }
            });
        }
    }
    // `step_minutes` is 15, 30 or 60 here.
    let periods_per_day = (24 * 60 / step_minutes) as usize;
    if !timestamps.len().is_multiple_of(periods_per_day) {
        return Err(SeriesError::PartialDay {
            file: file.to_owned(),
            n_rows: timestamps.len(),
            periods_per_day,
        });
    }
    Ok(periods_per_day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two whole days of hourly data with two exogenous columns, NP-style header.
    fn two_days(header: &str) -> String {
        let mut text = format!("{header}\n");
        for day in 1..=2 {
            for hour in 0..24 {
                let price = format!("{}.{:02}", 30 + hour, day);
                text.push_str(&format!(
                    "2018-01-0{day} {hour:02}:00:00,{price},{}.5,{}\n",
                    40000 + hour,
                    100 * hour
                ));
            }
        }
        text
    }

    const NP_HEADER: &str = "Date, Price, Grid load forecast, Wind power forecast";

    fn parse(text: &str) -> Result<PriceSeries, SeriesError> {
        PriceSeries::parse_csv("test.csv", text, &SeriesLayout::default())
    }

    /// Replaces line `line_no` (1-based) of `text` with `new_line`.
    fn with_line(text: &str, line_no: usize, new_line: &str) -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[line_no - 1] = new_line.to_owned();
        lines.join("\n") + "\n"
    }

    #[test]
    fn parses_np_style_header_with_default_layout() {
        let series = parse(&two_days(NP_HEADER)).unwrap();
        assert_eq!(series.periods_per_day(), 24);
        assert_eq!(series.n_days(), 2);
        assert_eq!(series.price_name(), "Price");
        assert_eq!(
            series.exogenous_names(),
            ["Grid load forecast", "Wind power forecast"]
        );
        assert_eq!(series.day_prices(1)[3], Decimal::from_str("33.02").unwrap());
        assert_eq!(series.day_prices_f64(0)[0], 30.01);
        assert_eq!(series.day_exogenous(0, 1)[2], 40002.5);
        assert_eq!(series.day_exogenous(1, 0)[5], 500.0);
        let date = NaiveDate::from_ymd_opt(2018, 1, 2).unwrap();
        assert_eq!(series.day_index_of(date), Some(1));
        assert_eq!(series.day_index_of(date.succ_opt().unwrap()), None);
        assert_eq!(series.weekday(0), Weekday::Mon);
    }

    #[test]
    fn empty_timestamp_header_is_allowed_as_in_de_csv() {
        let series = parse(&two_days(",Price,Load,Wind")).unwrap();
        assert_eq!(series.n_days(), 2);
    }

    #[test]
    fn chooses_columns_by_name_and_by_index() {
        let text = two_days(NP_HEADER);
        let layout = SeriesLayout {
            price_column: ColumnChoice::ByName("Grid load forecast".into()),
            exogenous: ExogenousChoice::ByIndices(vec![1]),
            ..SeriesLayout::default()
        };
        let series = PriceSeries::parse_csv("t.csv", &text, &layout).unwrap();
        assert_eq!(
            series.day_prices(0)[1],
            Decimal::from_str("40001.5").unwrap()
        );
        assert_eq!(series.exogenous_names(), ["Price"]);
        let layout = SeriesLayout {
            exogenous: ExogenousChoice::None,
            ..SeriesLayout::default()
        };
        let series = PriceSeries::parse_csv("t.csv", &text, &layout).unwrap();
        assert!(series.exogenous().is_empty());
    }

    #[test]
    fn keeps_six_decimals_exactly() {
        let text = with_line(&two_days(NP_HEADER), 2, "2018-01-01 00:00:00,25.464211,1,2");
        let series = parse(&text).unwrap();
        assert_eq!(series.prices()[0], Decimal::from_str("25.464211").unwrap());
    }

    #[test]
    fn parses_quarter_hour_series() {
        let mut text = String::from("ts,price\n");
        for period in 0..96 {
            let (h, m) = (period / 4, 15 * (period % 4));
            text.push_str(&format!("2020-03-01T{h:02}:{m:02},{period}\n"));
        }
        let series = parse(&text).unwrap();
        assert_eq!((series.periods_per_day(), series.n_days()), (96, 1));
    }

    fn expect_err(text: &str) -> SeriesError {
        match parse(text) {
            Ok(_) => panic!("expected an error"),
            Err(err) => err,
        }
    }

    #[test]
    fn rejects_bad_number_naming_line_and_column() {
        let text = with_line(&two_days(NP_HEADER), 5, "2018-01-01 03:00:00,31.0,4x,7");
        let err = expect_err(&text);
        assert_eq!(
            err,
            SeriesError::BadNumber {
                file: "test.csv".into(),
                line: 5,
                column: 3,
                name: "Grid load forecast".into(),
                text: "4x".into(),
            }
        );
        assert!(err.to_string().starts_with("test.csv:5: column 3"), "{err}");
    }

    #[test]
    fn rejects_nan_and_empty_cells() {
        let text = with_line(&two_days(NP_HEADER), 4, "2018-01-01 02:00:00,31.0,NaN,7");
        assert!(matches!(
            expect_err(&text),
            SeriesError::BadNumber {
                line: 4,
                column: 3,
                ..
            }
        ));
        let text = with_line(&two_days(NP_HEADER), 4, "2018-01-01 02:00:00,,1,7");
        assert!(matches!(
            expect_err(&text),
            SeriesError::BadNumber {
                line: 4,
                column: 2,
                ..
            }
        ));
    }

    #[test]
    fn rejects_bad_timestamp() {
        let text = with_line(&two_days(NP_HEADER), 3, "2018-01-01 1am,31.0,1,7");
        assert!(matches!(
            expect_err(&text),
            SeriesError::BadTimestamp {
                line: 3,
                column: 1,
                ..
            }
        ));
    }

    #[test]
    fn rejects_gap() {
        let text = with_line(&two_days(NP_HEADER), 10, "2018-01-01 09:00:00,31.0,1,7");
        // Line 10 should hold 08:00; after the gap line 11 (09:00) then is a duplicate, but
        // the first error reported is the gap itself.
        assert!(matches!(
            expect_err(&text),
            SeriesError::IrregularStep { line: 10, .. }
        ));
    }

    #[test]
    fn rejects_duplicate_timestamp() {
        let text = with_line(&two_days(NP_HEADER), 10, "2018-01-01 07:00:00,31.0,1,7");
        assert!(matches!(
            expect_err(&text),
            SeriesError::DuplicateTimestamp { line: 10, .. }
        ));
    }

    #[test]
    fn rejects_ragged_row() {
        let text = with_line(&two_days(NP_HEADER), 7, "2018-01-01 05:00:00,31.0,1");
        assert_eq!(
            expect_err(&text),
            SeriesError::RaggedRow {
                file: "test.csv".into(),
                line: 7,
                expected: 4,
                found: 3
            }
        );
    }

    #[test]
    fn rejects_missing_value_column_name() {
        let err = expect_err(&two_days("Date,Price,,Wind"));
        assert_eq!(
            err,
            SeriesError::MissingColumnName {
                file: "test.csv".into(),
                line: 1,
                column: 3
            }
        );
    }

    #[test]
    fn rejects_unknown_and_duplicate_column_names() {
        let layout = SeriesLayout {
            price_column: ColumnChoice::ByName("Zonal price".into()),
            ..SeriesLayout::default()
        };
        let err = PriceSeries::parse_csv("t.csv", &two_days(NP_HEADER), &layout).unwrap_err();
        assert!(matches!(err, SeriesError::UnknownColumn { .. }));
        let err = expect_err(&two_days("Date,Price,Load,Price"));
        assert!(matches!(
            err,
            SeriesError::DuplicateColumnName { column: 4, .. }
        ));
    }

    #[test]
    fn rejects_partial_day() {
        let text = two_days(NP_HEADER);
        let truncated: String = text
            .lines()
            .take(1 + 30)
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            expect_err(&truncated),
            SeriesError::PartialDay {
                file: "test.csv".into(),
                n_rows: 30,
                periods_per_day: 24
            }
        );
    }

    #[test]
    fn rejects_first_row_not_at_midnight() {
        let text = two_days(NP_HEADER);
        let shifted: String = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| l.to_owned() + "\n")
            .collect();
        assert!(matches!(
            expect_err(&shifted),
            SeriesError::DayStartNotMidnight { line: 2, .. }
        ));
    }

    #[test]
    fn rejects_unsupported_step() {
        let text = "Date,Price\n2018-01-01 00:00:00,1\n2018-01-01 02:00:00,2\n";
        assert!(matches!(
            expect_err(text),
            SeriesError::UnsupportedStep {
                line: 3,
                step_minutes: 120,
                ..
            }
        ));
    }

    #[test]
    fn rejects_empty_file_and_header_only() {
        assert_eq!(
            expect_err(""),
            SeriesError::EmptyFile {
                file: "test.csv".into()
            }
        );
        assert_eq!(
            expect_err("\n\n"),
            SeriesError::EmptyFile {
                file: "test.csv".into()
            }
        );
        assert_eq!(
            expect_err("Date,Price\n"),
            SeriesError::NoRows {
                file: "test.csv".into()
            }
        );
    }

    #[test]
    fn rejects_blank_line_in_the_middle() {
        let text = with_line(&two_days(NP_HEADER), 6, "");
        assert!(matches!(
            expect_err(&text),
            SeriesError::RaggedRow {
                line: 6,
                found: 1,
                ..
            }
        ));
    }

    #[test]
    fn from_parts_rejects_non_finite_exogenous() {
        let series = parse(&two_days(NP_HEADER)).unwrap();
        let mut exogenous = series.exogenous().to_vec();
        exogenous[1][30] = f64::NAN;
        let err = PriceSeries::from_parts(
            "x",
            "Price",
            series.timestamps().to_vec(),
            series.prices().to_vec(),
            series.exogenous_names().to_vec(),
            exogenous,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            SeriesError::NonFinite {
                column: 1,
                row: 30,
                ..
            }
        ));
    }

    #[test]
    fn test_period_is_the_last_days() {
        let series = parse(&two_days(NP_HEADER)).unwrap();
        assert_eq!(series.test_period_start_day(1), Some(1));
        assert_eq!(series.test_period_start_day(2), None);
    }

    /// The epftoolbox benchmark files in `shared/data` (CI has them).
    #[test]
    fn parses_the_three_benchmark_files() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data");
        let cases = [
            ("NP.csv", "Price", "2016-12-27", 31.05),
            ("DE.csv", "Price", "2016-01-04", 34.97),
            ("PJM.csv", "Zonal COMED price", "2016-12-27", 25.464211),
        ];
        for (file, price_name, test_start, first_price) in cases {
            let path = format!("{dir}/{file}");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
                panic!(
                    "benchmark data file {path} is missing or unreadable ({err}); \
                     it ships in shared/data"
                )
            });
            let series = PriceSeries::parse_csv(file, &text, &SeriesLayout::default())
                .unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(series.n_days(), 2184, "{file}");
            assert_eq!(series.periods_per_day(), 24, "{file}");
            assert_eq!(series.price_name(), price_name, "{file}");
            assert_eq!(series.exogenous().len(), 2, "{file}");
            assert_eq!(series.prices_f64()[0], first_price, "{file}");
            let start = series.test_period_start_day(STANDARD_TEST_DAYS).unwrap();
            assert_eq!(series.date(start).to_string(), test_start, "{file}");
        }
    }
}
