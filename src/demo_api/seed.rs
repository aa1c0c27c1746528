//! The demo API's seed orders, with emails and Luhn-valid test card numbers.

use super::Order;

/// The seed orders: 30 in the US store, 20 in the EU store, across August and
/// September 2025, each with an email and a Luhn-valid test card number.
pub(super) fn seed_orders() -> Vec<Order> {
    const FIRST: &[&str] = &[
        "ana", "ben", "chloe", "dev", "elif", "farid", "greta", "hugo", "ines", "jonas",
    ];
    const LAST: &[&str] = &[
        "silva", "okafor", "martin", "patel", "yilmaz", "haddad", "berg", "laurent", "costa",
        "weber",
    ];
    (0u64..50)
        .map(|i| {
            let region = if i % 5 < 3 { "us" } else { "eu" };
            let first = FIRST.get((i % 10) as usize).copied().unwrap_or("ana");
            let last = LAST
                .get(((i / 10 + i * 3) % 10) as usize)
                .copied()
                .unwrap_or("silva");
            let day = i % 30 + 1;
            let month = if i < 30 { 8 } else { 9 };
            let domain = if region == "eu" {
                "example.eu"
            } else {
                "example.com"
            };
            Order {
                id: format!("ord-{}", 1001 + i),
                date: format!("2025-{month:02}-{day:02}"),
                region: region.to_owned(),
                customer: format!("{first} {last}"),
                email: format!("{first}.{last}{i}@{domain}"),
                card: luhn_complete(&format!("411111111111{:03}", 100 + i)),
                amount_cents: 1_000 + (i * 7_919) % 90_000,
                invoice_ref: not_luhn(&format!("700000000000{:03}", 100 + i)),
            }
        })
        .collect()
}

/// Appends a digit that makes `digits` fail the Luhn check.
fn not_luhn(digits: &str) -> String {
    let valid = luhn_complete(digits);
    let check = valid
        .chars()
        .last()
        .and_then(|c| c.to_digit(10))
        .unwrap_or(0);
    format!("{digits}{}", (check + 1) % 10)
}

/// Appends the Luhn check digit to `digits`.
fn luhn_complete(digits: &str) -> String {
    let sum: u32 = digits
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    format!("{digits}{}", (10 - sum % 10) % 10)
}
