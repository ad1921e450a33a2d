//! DuckDB's answers (Arrow record batches) as polars frames, the form the outputs, the
//! PostgreSQL export and the report read. Every value keeps its exact type: integers stay
//! integers, DECIMALs keep their scale, timestamps their unit and zone. Types the outputs
//! have no column kind for (lists, structs, intervals, …) become text in DuckDB's own
//! notation, never a lossy number.

use anyhow::{anyhow, bail, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{self as adt, DataType as A, TimeUnit as ATimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use polars::prelude::*;

/// The polars type a DuckDB result column of Arrow type `dtype` becomes.
///
/// `DECIMAL(p, 0)`, which DuckDB gives for `SUM` of integers (a `HUGEINT`), becomes a 64-bit
/// integer, so that a sum of counts or micros reads as one; a value that does not fit is an
/// error, never a wrapped or rounded number.
pub fn polars_dtype(dtype: &A) -> DataType {
    match dtype {
        A::Null => DataType::Null,
        A::Boolean => DataType::Boolean,
        A::Int8 => DataType::Int8,
        A::Int16 => DataType::Int16,
        A::Int32 => DataType::Int32,
        A::Int64 => DataType::Int64,
        // polars here is built without its 8- and 16-bit unsigned types: widened, exactly.
        A::UInt8 | A::UInt16 => DataType::Int32,
        A::UInt32 => DataType::UInt32,
        A::UInt64 => DataType::UInt64,
        A::Float32 => DataType::Float32,
        A::Float64 => DataType::Float64,
        A::Utf8 | A::LargeUtf8 | A::Utf8View => DataType::String,
        A::Date32 => DataType::Date,
        A::Timestamp(unit, tz) => DataType::Datetime(
            time_unit(unit),
            tz.as_ref().map(|_| TimeZone::UTC),
        ),
        A::Decimal128(_, 0) => DataType::Int64,
        A::Decimal128(p, s) if *s > 0 => DataType::Decimal(usize::from(*p), *s as usize),
        _ => DataType::String,
    }
}

fn time_unit(unit: &ATimeUnit) -> TimeUnit {
    match unit {
        ATimeUnit::Nanosecond => TimeUnit::Nanoseconds,
        ATimeUnit::Millisecond => TimeUnit::Milliseconds,
        // Seconds are widened to microseconds below.
        ATimeUnit::Microsecond | ATimeUnit::Second => TimeUnit::Microseconds,
    }
}

/// The polars schema of a result.
pub fn schema(schema: &arrow::datatypes::Schema) -> Schema {
    schema.fields().iter().map(|f| Field::new(f.name().as_str().into(), polars_dtype(f.data_type()))).collect()
}

/// One record batch as a frame with [`schema`]'s types.
pub fn to_polars(batch: &RecordBatch) -> Result<DataFrame> {
    let mut cols = Vec::with_capacity(batch.num_columns());
    for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
        let series = column(field.name(), array).map_err(|e| anyhow!("column {}: {e}", field.name()))?;
        cols.push(series.into_column());
    }
    Ok(DataFrame::new(batch.num_rows(), cols)?)
}

fn opt<T: Copy>(array: &dyn Array, values: &[T]) -> Vec<Option<T>> {
    (0..values.len()).map(|i| array.is_valid(i).then(|| values[i])).collect()
}

fn column(name: &str, array: &ArrayRef) -> Result<Series> {
    let name: PlSmallStr = name.into();
    let a = array.as_ref();
    Ok(match a.data_type() {
        A::Null => Series::full_null(name, a.len(), &DataType::Null),
        A::Boolean => {
            let b = a.as_boolean();
            Series::new(name, (0..b.len()).map(|i| b.is_valid(i).then(|| b.value(i))).collect::<Vec<_>>())
        }
        A::Int8 => Series::new(name, opt(a, a.as_primitive::<adt::Int8Type>().values())),
        A::Int16 => Series::new(name, opt(a, a.as_primitive::<adt::Int16Type>().values())),
        A::Int32 => Series::new(name, opt(a, a.as_primitive::<adt::Int32Type>().values())),
        A::Int64 => Series::new(name, opt(a, a.as_primitive::<adt::Int64Type>().values())),
        A::UInt8 | A::UInt16 => {
            let wide = arrow::compute::cast(a, &A::Int32)?;
            Series::new(name, opt(wide.as_ref(), wide.as_primitive::<adt::Int32Type>().values()))
        }
        A::UInt32 => Series::new(name, opt(a, a.as_primitive::<adt::UInt32Type>().values())),
        A::UInt64 => Series::new(name, opt(a, a.as_primitive::<adt::UInt64Type>().values())),
        A::Float32 => Series::new(name, opt(a, a.as_primitive::<adt::Float32Type>().values())),
        A::Float64 => Series::new(name, opt(a, a.as_primitive::<adt::Float64Type>().values())),
        A::Utf8 | A::LargeUtf8 | A::Utf8View => {
            let utf8 = arrow::compute::cast(a, &A::Utf8)?;
            let s = utf8.as_string::<i32>();
            Series::new(name, (0..s.len()).map(|i| s.is_valid(i).then(|| s.value(i))).collect::<Vec<_>>())
        }
        A::Date32 => Series::new(name, opt(a, a.as_primitive::<adt::Date32Type>().values())).cast(&DataType::Date)?,
        A::Timestamp(unit, tz) => {
            let values: Vec<Option<i64>> = match unit {
                ATimeUnit::Second => {
                    let v = a.as_primitive::<adt::TimestampSecondType>();
                    (0..v.len())
                        .map(|i| {
                            v.is_valid(i)
                                .then(|| v.value(i).checked_mul(1_000_000).ok_or_else(|| anyhow!("timestamp {} s is out of range", v.value(i))))
                                .transpose()
                        })
                        .collect::<Result<_>>()?
                }
                ATimeUnit::Millisecond => opt(a, a.as_primitive::<adt::TimestampMillisecondType>().values()),
                ATimeUnit::Microsecond => opt(a, a.as_primitive::<adt::TimestampMicrosecondType>().values()),
                ATimeUnit::Nanosecond => opt(a, a.as_primitive::<adt::TimestampNanosecondType>().values()),
            };
            Series::new(name, values).cast(&polars_dtype(&A::Timestamp(*unit, tz.clone())))?
        }
        A::Decimal128(_, 0) => {
            let d = a.as_primitive::<adt::Decimal128Type>();
            let values: Vec<Option<i64>> = (0..d.len())
                .map(|i| {
                    d.is_valid(i)
                        .then(|| {
                            i64::try_from(d.value(i)).map_err(|_| {
                                anyhow!("the integer {} does not fit 64 bits; CAST it to VARCHAR or DECIMAL(38, 1) to see it", d.value(i))
                            })
                        })
                        .transpose()
                })
                .collect::<Result<_>>()?;
            Series::new(name, values)
        }
        A::Decimal128(p, s) if *s > 0 => {
            let d = a.as_primitive::<adt::Decimal128Type>();
            Series::new(name, opt(a, d.values())).into_decimal(usize::from(*p), *s as usize)?
        }
        _ => text(name, a)?,
    })
}

/// Any other column as text, each value as DuckDB's Arrow gives it; null stays null.
fn text(name: PlSmallStr, a: &dyn Array) -> Result<Series> {
    let options = FormatOptions::default().with_display_error(false);
    let f = ArrayFormatter::try_new(a, &options).map_err(|e| anyhow!("cannot show a {} value: {e}", a.data_type()))?;
    let mut values: Vec<Option<String>> = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        if a.is_null(i) {
            values.push(None);
        } else {
            values.push(Some(f.value(i).try_to_string().map_err(|e| anyhow!("cannot show a {} value: {e}", a.data_type()))?));
        }
    }
    Ok(Series::new(name, values))
}

/// Checks a result's columns have distinct names: outputs address columns by name.
pub fn check_names(schema: &arrow::datatypes::Schema) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for f in schema.fields() {
        if !seen.insert(f.name().as_str()) {
            bail!("the result has two columns named {:?}: give one an alias (AS another_name)", f.name());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use arrow::array::{Decimal128Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Field as AField, Schema as ASchema};
    use std::sync::Arc;

    #[test]
    fn values_keep_their_exact_types() {
        let schema = Arc::new(ASchema::new(vec![
            AField::new("n", A::Int64, true),
            AField::new("sum_micros", A::Decimal128(38, 0), true),
            AField::new("amount", A::Decimal128(38, 6), true),
            AField::new("ts", A::Timestamp(ATimeUnit::Microsecond, Some("UTC".into())), true),
            AField::new("s", A::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(Decimal128Array::from(vec![Some(9_007_199_254_740_993), None]).with_precision_and_scale(38, 0).unwrap()),
                Arc::new(Decimal128Array::from(vec![Some(1_234_567), Some(-1)]).with_precision_and_scale(38, 6).unwrap()),
                Arc::new(TimestampMicrosecondArray::from(vec![Some(1), None]).with_timezone("UTC")),
                Arc::new(StringArray::from(vec![Some(""), None])),
            ],
        )
        .unwrap();
        let df = to_polars(&batch).unwrap();
        assert_eq!(df.column("n").unwrap().i64().unwrap().get(1), None);
        assert_eq!(df.column("sum_micros").unwrap().i64().unwrap().get(0), Some(9_007_199_254_740_993), "above 2^53, exact");
        assert_eq!(df.column("amount").unwrap().dtype(), &DataType::Decimal(38, 6));
        assert_eq!(df.column("ts").unwrap().dtype(), &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)));
        assert_eq!(df.column("s").unwrap().str().unwrap().get(0), Some(""), "empty text is not null");
        assert_eq!(df.column("s").unwrap().str().unwrap().get(1), None);
        let big = RecordBatch::try_new(
            Arc::new(ASchema::new(vec![AField::new("x", A::Decimal128(38, 0), true)])),
            vec![Arc::new(Decimal128Array::from(vec![Some(i128::from(i64::MAX) + 1)]).with_precision_and_scale(38, 0).unwrap())],
        )
        .unwrap();
        assert!(to_polars(&big).unwrap_err().to_string().contains("does not fit 64 bits"));
    }
}
