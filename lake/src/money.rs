//! Exact money: amounts travel as decimal text and are held as integer micros
//! (amount × 10⁶). No floating point anywhere on the way from a request to a report.

use std::fmt;

/// Largest accepted amount: 10¹² (in micros: 10¹⁸, still inside i64).
pub const MAX_AMOUNT_MICROS: i64 = 1_000_000_000_000 * 1_000_000;
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// Why an amount was refused; the text is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmountError(pub &'static str);

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Parses a non-negative decimal (`12`, `12.5`, `0.000001`) with at most six fractional
/// digits and at most 10¹² into micros. Signs, exponents, `NaN`, spaces, thousands
/// separators and more than six decimals are refused rather than rounded.
pub fn parse_amount_micros(text: &str) -> Result<i64, AmountError> {
    if text.is_empty() {
        return Err(AmountError("amount is empty"));
    }
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AmountError(
            "amount must be a non-negative decimal number like 12.50",
        ));
    }
    let frac = match frac_part {
        None => "",
        Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(AmountError(
                "amount must be a non-negative decimal number like 12.50",
            ))
        }
        Some(f) if f.len() > 6 => return Err(AmountError("amount has more than 6 decimal places")),
        Some(f) => f,
    };
    let int_digits = int_part.trim_start_matches('0');
    if int_digits.len() > 13 {
        return Err(AmountError("amount is over 1000000000000"));
    }
    let units: i64 = if int_digits.is_empty() {
        0
    } else {
        int_digits.parse().map_err(|_| AmountError("amount is over 1000000000000"))?
    };
    let mut frac_micros: i64 = 0;
    for (i, b) in frac.bytes().enumerate() {
        frac_micros += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
    }
    let micros = units
        .checked_mul(MICROS_PER_UNIT)
        .and_then(|m| m.checked_add(frac_micros))
        .ok_or(AmountError("amount is over 1000000000000"))?;
    if micros > MAX_AMOUNT_MICROS {
        return Err(AmountError("amount is over 1000000000000"));
    }
    Ok(micros)
}

/// Formats micros as an exact decimal with the fraction trimmed to what is needed, at least
/// two places (`12.50`, `0.000001`, `-3.00`).
pub fn format_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let units = abs / 1_000_000;
    let frac = abs % 1_000_000;
    let mut frac_text = format!("{frac:06}");
    while frac_text.len() > 2 && frac_text.ends_with('0') {
        frac_text.pop();
    }
    format!("{sign}{units}.{frac_text}")
}

/// Validates an ISO 4217-shaped currency code (three ASCII letters, any case) and returns
/// it upper-cased.
pub fn normalize_currency(text: &str) -> Option<String> {
    (text.len() == 3 && text.bytes().all(|b| b.is_ascii_alphabetic())).then(|| text.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_amounts() {
        assert_eq!(parse_amount_micros("0.1"), Ok(100_000));
        assert_eq!((0..10).map(|_| parse_amount_micros("0.1").unwrap()).sum::<i64>(), 1_000_000);
        assert_eq!(parse_amount_micros("12"), Ok(12_000_000));
        assert_eq!(parse_amount_micros("19.99"), Ok(19_990_000));
        assert_eq!(parse_amount_micros("0.000001"), Ok(1));
        assert_eq!(parse_amount_micros("007.5"), Ok(7_500_000));
        assert_eq!(parse_amount_micros("1000000000000"), Ok(MAX_AMOUNT_MICROS));
        assert_eq!(parse_amount_micros("1000000000000.000000"), Ok(MAX_AMOUNT_MICROS));
    }

    #[test]
    fn refused_amounts() {
        for bad in [
            "", "1e3", "-1", "+1", "NaN", "nan", "inf", "1.1234567", "99999999999999",
            "1000000000000.000001", ".5", "5.", "1,5", " 1", "1 ", "0x10", "1.2.3",
            "99999999999999999999999999",
        ] {
            assert!(parse_amount_micros(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_micros(12_500_000), "12.50");
        assert_eq!(format_micros(1), "0.000001");
        assert_eq!(format_micros(0), "0.00");
        assert_eq!(format_micros(-3_000_000), "-3.00");
    }

    #[test]
    fn currencies() {
        assert_eq!(normalize_currency("eur").as_deref(), Some("EUR"));
        assert_eq!(normalize_currency("EU"), None);
        assert_eq!(normalize_currency("EU1"), None);
        assert_eq!(normalize_currency("EURO"), None);
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(m in 0i64..=MAX_AMOUNT_MICROS) {
            prop_assert_eq!(parse_amount_micros(&format_micros(m)), Ok(m));
        }
    }
}
