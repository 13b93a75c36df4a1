//! Commerce metrics on Segment's e-commerce events (`Product Viewed`, `Product Added`,
//! `Order Completed`, `Order Refunded`).
//!
//! - Per period and over the range: revenue (the `revenue` property of `Order Completed`, or
//!   `total` when an order has no `revenue`), refunds (the same on `Order Refunded`), net
//!   revenue, orders, average order value (revenue / orders), customers (persons with an
//!   order); over the range also visitors (persons with any event) and the conversion rate
//!   (customers / visitors).
//! - Product performance: views, cart adds, orders and revenue per value of a product
//!   property (`category` by default), ranked by revenue. Views and cart adds count under the
//!   event's own property (Segment puts product fields at the top of those events). An order
//!   with line items (its `products` array) counts under each line's value: revenue `price` ×
//!   `quantity` (1 when absent) per line, and one order per distinct value; an order without
//!   line items counts under its own top-level property, with its revenue.
//! - Historic customer lifetime value: net revenue per customer over all their history up to
//!   `to` (average, median, maximum).
//! - Purchase frequency: how many customers placed 1, 2, … orders in the range (the last
//!   bucket is "that many or more").

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use hashbrown::HashMap;
use livora_columnar::Table;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::period::{Period, Periods};

pub const VIEWED: &str = "Product Viewed";
pub const ADDED: &str = "Product Added";
pub const ORDERED: &str = "Order Completed";
pub const REFUNDED: &str = "Order Refunded";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommerceQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    #[serde(default = "default_interval")]
    pub interval: Period,
    /// The property products are grouped by.
    #[serde(default = "default_product_property")]
    pub product_property: String,
    #[serde(default = "default_products_limit")]
    pub products_limit: usize,
    /// The last purchase-frequency bucket ("this many orders or more").
    #[serde(default = "default_frequency_max")]
    pub frequency_max: usize,
}

fn default_interval() -> Period {
    Period::Day
}
fn default_product_property() -> String {
    "category".into()
}
fn default_products_limit() -> usize {
    20
}
fn default_frequency_max() -> usize {
    10
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommerceResult {
    pub buckets: Vec<DateTime<Utc>>,
    pub revenue: Vec<f64>,
    pub refunds: Vec<f64>,
    pub net_revenue: Vec<f64>,
    pub orders: Vec<u64>,
    pub average_order_value: Vec<Option<f64>>,
    pub customers: Vec<u64>,
    pub totals: Totals,
    pub products: Vec<ProductRow>,
    pub lifetime_value: LifetimeValue,
    /// `(orders, customers)`: customers with exactly that many orders in the range; the
    /// last row counts that many or more.
    pub purchase_frequency: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    pub revenue: f64,
    pub refunds: f64,
    pub net_revenue: f64,
    pub orders: u64,
    pub average_order_value: Option<f64>,
    pub customers: u64,
    pub visitors: u64,
    /// Customers over visitors.
    pub conversion_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProductRow {
    /// The product property's value; `null` for events without it.
    pub value: Option<String>,
    pub views: u64,
    pub adds: u64,
    pub orders: u64,
    pub revenue: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LifetimeValue {
    pub customers: u64,
    pub average: Option<f64>,
    pub median: Option<f64>,
    pub max: Option<f64>,
}

impl CommerceQuery {
    fn validate(&self) -> Result<(), Error> {
        if self.from >= self.to {
            return Err(Error::Invalid("`from` must be before `to`".into()));
        }
        if !(1..=1_000).contains(&self.products_limit) {
            return Err(Error::Invalid(
                "`products_limit` must be between 1 and 1000".into(),
            ));
        }
        if !(1..=1_000).contains(&self.frequency_max) {
            return Err(Error::Invalid(
                "`frequency_max` must be between 1 and 1000".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Default)]
struct Part {
    revenue: Vec<f64>,
    refunds: Vec<f64>,
    orders: Vec<u64>,
    /// (canonical person, bucket) of orders.
    buyers: Vec<(u32, u32)>,
    visitors: Vec<u32>,
    /// product value (0 = none) -> views, adds, orders, revenue.
    products: HashMap<u32, (u64, u64, u64, f64)>,
    /// Net revenue per canonical person over history up to `to`.
    lifetime: HashMap<u32, f64>,
}

pub fn commerce(
    t: &Table,
    redirects: &[u32],
    q: &CommerceQuery,
    tz: Tz,
) -> Result<CommerceResult, Error> {
    q.validate()?;
    let periods = Periods::covering(tz, q.interval, q.from, q.to)?;
    let buckets = periods.len();
    let (from, to) = (q.from.timestamp_micros(), q.to.timestamp_micros());
    let name = |n: &str| t.names.get(n);
    let (viewed, added, ordered, refunded) =
        (name(VIEWED), name(ADDED), name(ORDERED), name(REFUNDED));
    let num = |k: &str| t.keys.get(k).and_then(|k| t.numbers.get(&k));
    let (revenue_col, total_col) = (num("revenue"), num("total"));
    let product_col = t
        .keys
        .get(&q.product_property)
        .and_then(|k| t.strings.get(&k));
    let line_key = |k: &str| t.keys.get(k);
    let (line_product, price_key, quantity_key) = (
        line_key(&q.product_property),
        line_key("price"),
        line_key("quantity"),
    );
    let amount = |row: usize| -> f64 {
        let get = |c: Option<&livora_columnar::NumColumn>| {
            c.and_then(|c| c.get(row)).filter(|x| !x.is_nan())
        };
        get(revenue_col).or_else(|| get(total_col)).unwrap_or(0.0)
    };
    // Lifetime value reads all history before `to`; the rest reads `[from, to)`.
    let parts: Vec<Part> = crate::parallel::ranges_over(&t.ranges_within(i64::MIN, to - 1))
        .into_par_iter()
        .map(|range| {
            let mut p = Part {
                revenue: vec![0.0; buckets],
                refunds: vec![0.0; buckets],
                orders: vec![0; buckets],
                ..Part::default()
            };
            for row in range {
                let ts = t.ts[row];
                if ts >= to {
                    continue;
                }
                let name = Some(t.name[row]);
                let is_order = name == ordered;
                let is_refund = name == refunded;
                let person = {
                    let id = t.person[row] as usize;
                    redirects.get(id).copied().unwrap_or(id as u32)
                };
                if is_order || is_refund {
                    let x = amount(row);
                    *p.lifetime.entry(person).or_default() += if is_order { x } else { -x };
                }
                if ts < from {
                    continue;
                }
                let Some(b) = periods.index(ts) else {
                    continue;
                };
                p.visitors.push(person);
                let product = || product_col.and_then(|c| c.get(row)).unwrap_or(0);
                if is_order {
                    let x = amount(row);
                    p.revenue[b] += x;
                    p.orders[b] += 1;
                    p.buyers.push((person, b as u32));
                    let lines = t.lines.of_row(row);
                    if lines.is_empty() {
                        let e = p.products.entry(product()).or_default();
                        e.2 += 1;
                        e.3 += x;
                    } else {
                        let mut counted: Vec<u32> = Vec::new();
                        for line in lines {
                            let v = line_product.map_or(0, |k| t.lines.str_id(k, line));
                            let price = price_key.and_then(|k| t.lines.num_at(k, line));
                            let quantity = quantity_key
                                .and_then(|k| t.lines.num_at(k, line))
                                .unwrap_or(1.0);
                            let e = p.products.entry(v).or_default();
                            if !counted.contains(&v) {
                                counted.push(v);
                                e.2 += 1;
                            }
                            e.3 += price.unwrap_or(0.0) * quantity;
                        }
                    }
                } else if is_refund {
                    p.refunds[b] += amount(row);
                } else if name == viewed {
                    p.products.entry(product()).or_default().0 += 1;
                } else if name == added {
                    p.products.entry(product()).or_default().1 += 1;
                }
            }
            p.visitors.sort_unstable();
            p.visitors.dedup();
            p
        })
        .collect();

    let mut revenue = vec![0.0; buckets];
    let mut refunds = vec![0.0; buckets];
    let mut orders = vec![0u64; buckets];
    let mut buyers: Vec<(u32, u32)> = Vec::new();
    let mut visitors: Vec<u32> = Vec::new();
    let mut products: HashMap<u32, (u64, u64, u64, f64)> = HashMap::new();
    let mut lifetime: HashMap<u32, f64> = HashMap::new();
    for p in parts {
        for b in 0..buckets {
            revenue[b] += p.revenue[b];
            refunds[b] += p.refunds[b];
            orders[b] += p.orders[b];
        }
        buyers.extend(p.buyers);
        visitors.extend(p.visitors);
        for (k, v) in p.products {
            let e = products.entry(k).or_default();
            (e.0, e.1, e.2, e.3) = (e.0 + v.0, e.1 + v.1, e.2 + v.2, e.3 + v.3);
        }
        for (k, v) in p.lifetime {
            *lifetime.entry(k).or_default() += v;
        }
    }
    visitors.par_sort_unstable();
    visitors.dedup();
    buyers.par_sort_unstable();
    // Orders per customer in the range, before dropping duplicate (person, bucket) pairs.
    let mut frequency = vec![0u64; q.frequency_max];
    for run in buyers.chunk_by(|a, b| a.0 == b.0) {
        frequency[run.len().min(q.frequency_max) - 1] += 1;
    }
    let customers_total = buyers.chunk_by(|a, b| a.0 == b.0).count() as u64;
    buyers.dedup();
    let mut customers = vec![0u64; buckets];
    for (_, b) in &buyers {
        customers[*b as usize] += 1;
    }
    let aov = |r: f64, o: u64| (o > 0).then(|| r / o as f64);
    let (rev_total, ref_total): (f64, f64) = (revenue.iter().sum(), refunds.iter().sum());
    let orders_total: u64 = orders.iter().sum();

    let mut rows: Vec<ProductRow> = products
        .into_iter()
        .map(|(v, (views, adds, ord, rev))| ProductRow {
            value: v
                .checked_sub(1)
                .and_then(|v| t.values.value(v))
                .map(str::to_owned),
            views,
            adds,
            orders: ord,
            revenue: rev,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.revenue
            .total_cmp(&a.revenue)
            .then_with(|| b.views.cmp(&a.views))
            .then_with(|| a.value.cmp(&b.value))
    });
    rows.truncate(q.products_limit);

    // Lifetime value: customers are persons with an order before `to`.
    let ever_ordered: hashbrown::HashSet<u32> = if ordered.is_some() {
        buyers_before(t, redirects, ordered, to)
    } else {
        hashbrown::HashSet::new()
    };
    let mut values: Vec<f64> = lifetime
        .iter()
        .filter(|(p, _)| ever_ordered.contains(*p))
        .map(|(_, v)| *v)
        .collect();
    let lifetime_value = LifetimeValue {
        customers: values.len() as u64,
        average: (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64),
        median: crate::trends::quantile(&mut values, 0.5),
        max: values.iter().copied().reduce(f64::max),
    };
    let visitors_total = visitors.len() as u64;
    Ok(CommerceResult {
        buckets: periods.starts.clone(),
        net_revenue: revenue.iter().zip(&refunds).map(|(r, f)| r - f).collect(),
        average_order_value: revenue
            .iter()
            .zip(&orders)
            .map(|(r, o)| aov(*r, *o))
            .collect(),
        revenue,
        refunds,
        orders,
        customers,
        totals: Totals {
            revenue: rev_total,
            refunds: ref_total,
            net_revenue: rev_total - ref_total,
            orders: orders_total,
            average_order_value: aov(rev_total, orders_total),
            customers: customers_total,
            visitors: visitors_total,
            conversion_rate: if visitors_total == 0 {
                0.0
            } else {
                customers_total as f64 / visitors_total as f64
            },
        },
        products: rows,
        lifetime_value,
        purchase_frequency: frequency
            .into_iter()
            .enumerate()
            .map(|(i, c)| (i as u64 + 1, c))
            .collect(),
    })
}

/// Canonical persons with an order before `to`.
fn buyers_before(
    t: &Table,
    redirects: &[u32],
    ordered: Option<u32>,
    to: i64,
) -> hashbrown::HashSet<u32> {
    crate::parallel::ranges_over(&t.ranges_with(i64::MIN, to - 1, Some(ordered.as_slice())))
        .into_par_iter()
        .map(|range| {
            let mut s = hashbrown::HashSet::new();
            for row in range {
                if Some(t.name[row]) == ordered && t.ts[row] < to {
                    let id = t.person[row] as usize;
                    s.insert(redirects.get(id).copied().unwrap_or(id as u32));
                }
            }
            s
        })
        .reduce(hashbrown::HashSet::new, |mut a, b| {
            a.extend(b);
            a
        })
}

#[cfg(test)]
mod tests;
