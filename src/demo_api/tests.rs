//! The demo API's seed orders: Luhn-valid cards, invoice references that are not, two regions.

fn luhn_valid(n: &str) -> bool {
    let sum: u32 = n
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[test]
fn seed_cards_pass_luhn() {
    let orders = super::seed::seed_orders();
    assert_eq!(orders.len(), 50);
    assert!(
        orders
            .iter()
            .all(|o| luhn_valid(&o.card) && o.card.len() == 16)
    );
}

#[test]
fn both_regions_have_orders_in_august() {
    let orders = super::seed::seed_orders();
    for region in ["us", "eu"] {
        assert!(
            orders
                .iter()
                .any(|o| o.region == region && o.date.starts_with("2025-08"))
        );
    }
}
