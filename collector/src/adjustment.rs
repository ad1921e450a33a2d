//! The fields of an adjustment (SPEC §7: a refund, rejection or restore of an earlier
//! conversion) and their checks, shared by `/adjust` and `collector adjustments import` so
//! that a row of a brand's CSV is refused exactly when the same request would be.

use lake::money::{normalize_currency, parse_amount_micros};
use lake::registry::Offer;
use lake::schema::adjustment::{self, is_valid_adjustment_id, MAX_ADJUSTMENT_ID_LEN};
use lake::schema::{is_valid_event, is_valid_order_id, DEFAULT_EVENT, MAX_ORDER_ID_LEN};

use crate::hit::Hit;

/// Adjustment fields as received (text; `None` or empty: not sent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdjustmentFields {
    pub order_id: Option<String>,
    pub action: Option<String>,
    pub event: Option<String>,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub adjustment_id: Option<String>,
}

/// A missing or malformed field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn bad(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError { field, message: message.into() }
}

fn sent(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

impl AdjustmentFields {
    /// The slot of a field name (`/adjust` keys and CSV columns alike).
    pub fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "order_id" => &mut self.order_id,
            "action" => &mut self.action,
            "event" => &mut self.event,
            "amount" => &mut self.amount,
            "currency" => &mut self.currency,
            "adjustment_id" => &mut self.adjustment_id,
            _ => return None,
        })
    }

    /// Checks every field, in a fixed order, and fills the adjustment part of `hit`:
    /// `order_id` and `action` (`refund`, `reject`, `restore`) are required; `event`
    /// defaults to `purchase`; an `amount` is taken for refunds only (a reject or restore
    /// with one is refused, rather than stored with a meaning it does not have), with the
    /// offer's currency unless one is sent; a currency without an amount is checked but not
    /// stored, as for conversions.
    pub fn apply(&self, offer: &Offer, hit: &mut Hit) -> Result<(), FieldError> {
        let order_id = sent(&self.order_id).ok_or_else(|| bad("order_id", "order_id is required"))?;
        if !is_valid_order_id(order_id) {
            return Err(bad("order_id", format!("order_id must be at most {MAX_ORDER_ID_LEN} characters without control characters")));
        }
        let action_text = sent(&self.action).ok_or_else(|| bad("action", "action is required: refund, reject or restore"))?;
        let action = adjustment::parse_action(action_text)
            .ok_or_else(|| bad("action", format!("action {action_text:?} must be refund, reject or restore")))?;
        let event = sent(&self.event).unwrap_or(DEFAULT_EVENT);
        if !is_valid_event(event) {
            return Err(bad("event", format!("event {event:?} must match [a-z0-9_]{{1,32}}")));
        }
        let currency = match sent(&self.currency) {
            Some(c) => Some(normalize_currency(c).ok_or_else(|| bad("currency", format!("currency {c:?} must be 3 letters (ISO 4217)")))?),
            None => None,
        };
        if let Some(amount) = sent(&self.amount) {
            if action != adjustment::REFUND {
                return Err(bad("amount", format!("an amount is only taken with action refund, not {action}")));
            }
            let micros = parse_amount_micros(amount).map_err(|e| bad("amount", format!("{e} (got {amount:?})")))?;
            hit.amount_micros = Some(micros);
            hit.currency = Some(currency.unwrap_or_else(|| offer.currency.clone()));
        }
        if let Some(id) = sent(&self.adjustment_id) {
            if !is_valid_adjustment_id(id) {
                return Err(bad(
                    "adjustment_id",
                    format!("adjustment_id must be at most {MAX_ADJUSTMENT_ID_LEN} characters without control characters"),
                ));
            }
            hit.adjustment_id = Some(id.to_string());
        }
        hit.order_id = Some(order_id.to_string());
        hit.action = Some(action.to_string());
        hit.event = Some(event.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lake::schema::HitKind;

    fn offer() -> Offer {
        Offer::new("shoes".into(), "https://shop.example.com/".into(), "t".into(), "EUR".into(), 7)
    }

    fn fields(pairs: &[(&str, &str)]) -> AdjustmentFields {
        let mut f = AdjustmentFields::default();
        for (k, v) in pairs {
            *f.slot(k).unwrap() = Some(v.to_string());
        }
        f
    }

    fn check(pairs: &[(&str, &str)]) -> Result<Hit, FieldError> {
        let mut hit = Hit::new(HitKind::Adjustment, "shoes".into());
        fields(pairs).apply(&offer(), &mut hit).map(|_| hit)
    }

    #[test]
    fn refunds_take_amounts_in_the_offers_currency_by_default() {
        let h = check(&[("order_id", "A-1"), ("action", "refund"), ("amount", "5.5")]).unwrap();
        assert_eq!((h.amount_micros, h.currency.as_deref(), h.event.as_deref()), (Some(5_500_000), Some("EUR"), Some("purchase")));
        let h = check(&[("order_id", "A-1"), ("action", "refund"), ("amount", "1"), ("currency", "usd"), ("adjustment_id", "r-1")]).unwrap();
        assert_eq!((h.currency.as_deref(), h.adjustment_id.as_deref()), (Some("USD"), Some("r-1")));
        let h = check(&[("order_id", "A-1"), ("action", "reject"), ("currency", "usd")]).unwrap();
        assert_eq!((h.amount_micros, h.currency, h.action.as_deref()), (None, None, Some("reject")));
    }

    #[test]
    fn every_bad_field_is_named() {
        let long = "x".repeat(129);
        for (pairs, field) in [
            (vec![("action", "refund")], "order_id"),
            (vec![("order_id", "A"), ("action", "cancel")], "action"),
            (vec![("order_id", "A")], "action"),
            (vec![("order_id", "A"), ("action", "Refund")], "action"),
            (vec![("order_id", "A\u{7}"), ("action", "refund")], "order_id"),
            (vec![("order_id", "A"), ("action", "refund"), ("event", "Buy")], "event"),
            (vec![("order_id", "A"), ("action", "refund"), ("amount", "-1")], "amount"),
            (vec![("order_id", "A"), ("action", "reject"), ("amount", "1")], "amount"),
            (vec![("order_id", "A"), ("action", "restore"), ("amount", "1")], "amount"),
            (vec![("order_id", "A"), ("action", "refund"), ("amount", "1"), ("currency", "EURO")], "currency"),
            (vec![("order_id", "A"), ("action", "refund"), ("adjustment_id", long.as_str())], "adjustment_id"),
            (vec![("order_id", "A"), ("action", "refund"), ("adjustment_id", "a\nb")], "adjustment_id"),
        ] {
            assert_eq!(check(&pairs).unwrap_err().field, field, "{pairs:?}");
        }
    }
}
