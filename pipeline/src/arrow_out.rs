//! polars frames to Parquet through arrow-rs, with the plain Arrow types every reader
//! knows (`Utf8`, not the `Utf8View` polars would record in the file's Arrow schema:
//! pyarrow then reads `string_view`, and its filters and older readers fail on it).
//!
//! Report tables and query results hold strings, dates, integers, floats, booleans,
//! timestamps and decimals; those are converted column by column, nulls kept.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, Int8Array,
    RecordBatch, StringArray, TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray, UInt16Array,
    UInt32Array, UInt64Array, UInt8Array,
};
use arrow::datatypes::{DataType as ArrowType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit as ArrowUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use polars::prelude::*;

use crate::error::{PipelineError, Result};

/// The Arrow type a polars column is written as.
pub fn arrow_type(dtype: &DataType) -> Result<ArrowType> {
    Ok(match dtype {
        DataType::String => ArrowType::Utf8,
        DataType::Boolean => ArrowType::Boolean,
        DataType::Int8 => ArrowType::Int8,
        DataType::Int16 => ArrowType::Int16,
        DataType::Int32 => ArrowType::Int32,
        DataType::Int64 => ArrowType::Int64,
        DataType::UInt8 => ArrowType::UInt8,
        DataType::UInt16 => ArrowType::UInt16,
        DataType::UInt32 => ArrowType::UInt32,
        DataType::UInt64 => ArrowType::UInt64,
        DataType::Float32 => ArrowType::Float32,
        DataType::Float64 => ArrowType::Float64,
        DataType::Date => ArrowType::Date32,
        DataType::Datetime(unit, tz) => {
            let unit = match unit {
                TimeUnit::Milliseconds => ArrowUnit::Millisecond,
                TimeUnit::Microseconds => ArrowUnit::Microsecond,
                TimeUnit::Nanoseconds => ArrowUnit::Nanosecond,
            };
            ArrowType::Timestamp(unit, tz.as_ref().map(|z| Arc::from(z.as_str())))
        }
        DataType::Decimal(p, s) => ArrowType::Decimal128(*p as u8, *s as i8),
        // A NULL literal column: written as text.
        DataType::Null => ArrowType::Utf8,
        other => return Err(PipelineError::Invalid(format!("cannot write a column of type {other} to Parquet"))),
    })
}

pub fn arrow_schema(schema: &Schema) -> Result<SchemaRef> {
    let fields: Vec<Field> = schema.iter().map(|(n, t)| Ok(Field::new(n.as_str(), arrow_type(t)?, true))).collect::<Result<_>>()?;
    Ok(Arc::new(ArrowSchema::new(fields)))
}

fn polars_err(what: &'static str) -> impl Fn(PolarsError) -> PipelineError {
    move |e| PipelineError::Invalid(format!("{what}: {e}"))
}

fn column(s: &Series) -> Result<ArrayRef> {
    let e = polars_err("converting a column for Parquet");
    Ok(match s.dtype() {
        DataType::String => Arc::new(s.str().map_err(&e)?.iter().collect::<StringArray>()),
        DataType::Null => Arc::new(StringArray::new_null(s.len())),
        DataType::Boolean => Arc::new(s.bool().map_err(&e)?.iter().collect::<BooleanArray>()),
        DataType::Int8 => Arc::new(s.i8().map_err(&e)?.iter().collect::<Int8Array>()),
        DataType::Int16 => Arc::new(s.i16().map_err(&e)?.iter().collect::<Int16Array>()),
        DataType::Int32 => Arc::new(s.i32().map_err(&e)?.iter().collect::<Int32Array>()),
        DataType::Int64 => Arc::new(s.i64().map_err(&e)?.iter().collect::<Int64Array>()),
        DataType::UInt8 => Arc::new(s.u8().map_err(&e)?.iter().collect::<UInt8Array>()),
        DataType::UInt16 => Arc::new(s.u16().map_err(&e)?.iter().collect::<UInt16Array>()),
        DataType::UInt32 => Arc::new(s.u32().map_err(&e)?.iter().collect::<UInt32Array>()),
        DataType::UInt64 => Arc::new(s.u64().map_err(&e)?.iter().collect::<UInt64Array>()),
        DataType::Float32 => Arc::new(s.f32().map_err(&e)?.iter().collect::<Float32Array>()),
        DataType::Float64 => Arc::new(s.f64().map_err(&e)?.iter().collect::<Float64Array>()),
        DataType::Date => {
            let phys = s.to_physical_repr();
            Arc::new(phys.i32().map_err(&e)?.iter().collect::<Date32Array>())
        }
        DataType::Datetime(unit, tz) => {
            let phys = s.to_physical_repr();
            let values = phys.i64().map_err(&e)?.iter();
            let tz = tz.as_ref().map(|z| z.as_str().to_string());
            match unit {
                TimeUnit::Milliseconds => Arc::new(values.collect::<TimestampMillisecondArray>().with_timezone_opt(tz)),
                TimeUnit::Microseconds => Arc::new(values.collect::<TimestampMicrosecondArray>().with_timezone_opt(tz)),
                TimeUnit::Nanoseconds => Arc::new(values.collect::<TimestampNanosecondArray>().with_timezone_opt(tz)),
            }
        }
        DataType::Decimal(p, sc) => {
            let phys = s.to_physical_repr();
            let values = phys.i128().map_err(&e)?.iter().collect::<Decimal128Array>();
            Arc::new(values.with_precision_and_scale(*p as u8, *sc as i8).map_err(|e| PipelineError::Invalid(format!("decimal column {}: {e}", s.name())))?)
        }
        other => return Err(PipelineError::Invalid(format!("cannot write column {} of type {other} to Parquet", s.name()))),
    })
}

/// One Arrow record batch of `df` under `schema` (from [`arrow_schema`]).
pub fn record_batch(df: &DataFrame, schema: &SchemaRef) -> Result<RecordBatch> {
    let arrays: Vec<ArrayRef> = df.columns().iter().map(|c| column(c.as_materialized_series())).collect::<Result<_>>()?;
    RecordBatch::try_new(schema.clone(), arrays).map_err(|e| PipelineError::Invalid(format!("building a record batch: {e}")))
}

/// zstd, statistics on: what the reports and exports use.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build()
}

/// Streams frames into one Parquet file.
pub struct FrameWriter<W: Write + Send> {
    schema: SchemaRef,
    writer: ArrowWriter<W>,
}

impl<W: Write + Send> FrameWriter<W> {
    pub fn new(out: W, schema: &Schema) -> Result<Self> {
        let schema = arrow_schema(schema)?;
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(writer_properties()))
            .map_err(|e| PipelineError::Invalid(format!("starting a Parquet file: {e}")))?;
        Ok(FrameWriter { schema, writer })
    }

    pub fn write(&mut self, df: &DataFrame) -> Result<()> {
        let batch = record_batch(df, &self.schema)?;
        self.writer.write(&batch).map_err(|e| PipelineError::Invalid(format!("writing Parquet: {e}")))
    }

    pub fn finish(self) -> Result<W> {
        self.writer.into_inner().map_err(|e| PipelineError::Invalid(format!("finishing a Parquet file: {e}")))
    }
}

/// A whole frame as Parquet bytes.
pub fn to_parquet_bytes(df: &DataFrame) -> Result<Vec<u8>> {
    let mut w = FrameWriter::new(Vec::new(), df.schema())?;
    w.write(df)?;
    w.finish()
}

/// One record batch as Parquet bytes, with the same properties.
pub fn batch_to_parquet_bytes(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut w = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(writer_properties()))
        .map_err(|e| PipelineError::Invalid(format!("starting a Parquet file: {e}")))?;
    w.write(batch).map_err(|e| PipelineError::Invalid(format!("writing Parquet: {e}")))?;
    w.into_inner().map_err(|e| PipelineError::Invalid(format!("finishing a Parquet file: {e}")))
}
