//! Conversion fields shared by `/p.gif` and `/postback` (`click_id`, `amount`, `coupon`, …):
//! collected from a query string, form or JSON body, then checked field by field. Nothing
//! is recorded unless every field is valid.

use lake::money::{normalize_currency, parse_amount_micros};
use lake::registry::Offer;
use lake::schema::{is_valid_event, is_valid_order_id, normalize_coupon, DEFAULT_EVENT, MAX_ORDER_ID_LEN};

use super::fields::Fields;
use super::{parse_uuid, ApiError};
use crate::hit::Hit;

/// Raw conversion fields as received; unrecognized pairs stay in `rest` for `params`
/// (query segments as sent, body fields form-encoded).
#[derive(Debug, Default)]
pub struct ConversionInput {
    pub offer: Option<String>,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub order_id: Option<String>,
    pub event: Option<String>,
    pub click_id: Option<String>,
    /// A coupon code (SPEC §8), stored upper-cased.
    pub coupon: Option<String>,
    pub token: Option<String>,
    pub rest: Vec<String>,
    seen: Vec<&'static str>,
}

impl Fields for ConversionInput {
    fn slot(&mut self, k: &str) -> Option<&mut Option<String>> {
        Some(match k {
            "offer" | "offer_id" => &mut self.offer,
            "amount" => &mut self.amount,
            "currency" => &mut self.currency,
            "order_id" => &mut self.order_id,
            "event" => &mut self.event,
            "click_id" => &mut self.click_id,
            "coupon" => &mut self.coupon,
            "token" => &mut self.token,
            _ => return None,
        })
    }

    fn rest(&mut self) -> &mut Vec<String> {
        &mut self.rest
    }

    fn field_name(k: &str) -> Option<&'static str> {
        known_field(k)
    }

    fn seen(&mut self) -> &mut Vec<&'static str> {
        &mut self.seen
    }
}

/// The conversion field a JSON key names (its value must be a string or a number).
pub fn known_field(k: &str) -> Option<&'static str> {
    Some(match k {
        "offer" | "offer_id" => "offer",
        "amount" => "amount",
        "currency" => "currency",
        "order_id" => "order_id",
        "event" => "event",
        "click_id" => "click_id",
        "coupon" => "coupon",
        "token" => "token",
        _ => return None,
    })
}

impl ConversionInput {
    pub fn offer_id(&self) -> Result<&str, ApiError> {
        self.offer.as_deref().ok_or_else(|| ApiError::bad("offer", "offer is required"))
    }

    /// Checks every field and fills the conversion part of `hit`.
    pub fn apply(&self, offer: &Offer, hit: &mut Hit) -> Result<(), ApiError> {
        if let Some(click_id) = &self.click_id {
            let id = parse_uuid(click_id).ok_or_else(|| ApiError::bad("click_id", format!("click_id {click_id:?} is not a UUID")))?;
            hit.click_id = Some(id.to_string());
        }
        let event = self.event.as_deref().unwrap_or(DEFAULT_EVENT);
        if !is_valid_event(event) {
            return Err(ApiError::bad("event", format!("event {event:?} must match [a-z0-9_]{{1,32}}")));
        }
        hit.event = Some(event.to_string());
        if let Some(order_id) = &self.order_id {
            if !is_valid_order_id(order_id) {
                return Err(ApiError::bad(
                    "order_id",
                    format!("order_id must be at most {MAX_ORDER_ID_LEN} characters without control characters"),
                ));
            }
            hit.order_id = Some(order_id.clone());
        }
        if let Some(amount) = &self.amount {
            let micros = parse_amount_micros(amount).map_err(|e| ApiError::bad("amount", format!("{e} (got {amount:?})")))?;
            hit.amount_micros = Some(micros);
            hit.currency = Some(match &self.currency {
                Some(c) => normalize_currency(c).ok_or_else(|| ApiError::bad("currency", format!("currency {c:?} must be 3 letters (ISO 4217)")))?,
                None => offer.currency.clone(),
            });
        } else if let Some(c) = &self.currency {
            // A currency without an amount is not stored, but a malformed one is still refused.
            normalize_currency(c).ok_or_else(|| ApiError::bad("currency", format!("currency {c:?} must be 3 letters (ISO 4217)")))?;
        }
        if let Some(coupon) = &self.coupon {
            hit.coupon = Some(
                normalize_coupon(coupon).ok_or_else(|| ApiError::bad("coupon", format!("coupon {coupon:?} must match [A-Za-z0-9_-]{{1,64}}")))?,
            );
        }
        hit.params = super::join_params(&self.rest);
        Ok(())
    }
}
