//! `livora demo`: a demo tenant, keys printed on start, and generated e-commerce traffic.
//!
//! The generator posts through the real HTTP API (so demo data takes the same path as an
//! SDK's). On the tenant's first start it backfills some days of history, then keeps sending
//! live sessions. Sessions follow a shop funnel: page views, product views, cart adds,
//! checkouts, and orders, with identify calls when a visitor signs up or buys.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use livora_model::Currency;
use livora_store::{KeyKind, MetadataStore, NewTenant, Tenant};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::client::Client;

pub const DEMO_TENANT: &str = "Demo Shop";

pub struct DemoOptions {
    pub rate: u32,
    pub backfill_days: u32,
}

pub struct DemoKeys {
    pub tenant_id: String,
    pub write_key: String,
    pub secret_key: String,
    /// The tenant was just created: history should be generated.
    pub fresh: bool,
    /// Staff accounts to sign in to the dashboard with.
    pub accounts: Vec<DemoAccount>,
}

/// A dashboard sign-in of the demo.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DemoAccount {
    pub email: String,
    pub password: String,
    pub role: livora_store::Role,
}

/// The demo's staff: an owner, and a viewer (who sees no personal data and no settings).
const ACCOUNTS: [(&str, &str, livora_store::Role); 2] = [
    (
        "owner@demo.livora.test",
        "Demo Owner",
        livora_store::Role::Owner,
    ),
    (
        "viewer@demo.livora.test",
        "Demo Viewer",
        livora_store::Role::Viewer,
    ),
];

/// Where the demo's passwords are kept (made once, at random, readable by the owner only).
pub const ACCOUNTS_FILE: &str = "demo-accounts.json";

/// The demo's staff accounts, created (with random passwords kept in `data_dir`) if missing.
async fn accounts(
    store: &dyn MetadataStore,
    tenant: livora_model::TenantId,
    data_dir: &std::path::Path,
) -> anyhow::Result<Vec<DemoAccount>> {
    let path = data_dir.join(ACCOUNTS_FILE);
    let mut kept: Vec<DemoAccount> = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is not valid", path.display()))?,
        Err(_) => Vec::new(),
    };
    let mut changed = false;
    for (email, name, role) in ACCOUNTS {
        let has_password = store
            .credentials(email)
            .await?
            .is_some_and(|c| c.password_hash.is_some());
        if has_password && kept.iter().any(|a| a.email == email) {
            continue;
        }
        let password: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        let user = match store.credentials(email).await? {
            Some(c) => c.user,
            None => store.create_user(email, name).await?,
        };
        let hash = {
            let pw = password.clone();
            tokio::task::spawn_blocking(move || livora_store::accounts::hash_password(&pw))
                .await??
        };
        store.set_password_hash(&user.id, &hash).await?;
        store.add_member(tenant, &user.id, role).await?;
        kept.retain(|a| a.email != email);
        kept.push(DemoAccount {
            email: email.to_owned(),
            password,
            role,
        });
        changed = true;
    }
    if changed {
        std::fs::create_dir_all(data_dir)?;
        std::fs::write(&path, serde_json::to_vec_pretty(&kept)?)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(kept)
}

/// The demo tenant, created if missing (`true` when it was just created).
pub async fn demo_tenant(store: &dyn MetadataStore) -> anyhow::Result<(Tenant, bool)> {
    let existing = store
        .tenants()
        .await?
        .into_iter()
        .find(|t| t.name == DEMO_TENANT);
    Ok(match existing {
        Some(t) => (t, false),
        None => {
            let t = store
                .create_tenant(NewTenant {
                    name: DEMO_TENANT.into(),
                    time_zone: "UTC".into(),
                    currency: Currency::parse("USD").map_err(anyhow::Error::msg)?,
                })
                .await?;
            (t, true)
        }
    })
}

/// Finds or creates the demo tenant and mints a fresh key pair for this run.
pub async fn prepare(
    store: &dyn MetadataStore,
    data_dir: &std::path::Path,
) -> anyhow::Result<DemoKeys> {
    let (tenant, fresh) = demo_tenant(store).await?;
    let accounts = accounts(store, tenant.id, data_dir).await?;
    let write = store.create_key(tenant.id, KeyKind::Write).await?;
    let secret = store.create_key(tenant.id, KeyKind::Secret).await?;
    Ok(DemoKeys {
        tenant_id: tenant.id.to_string(),
        write_key: write.secret,
        secret_key: secret.secret,
        fresh,
        accounts,
    })
}

/// Prints the keys. A closed stdout (`livora demo | head`) must not stop the server, so a
/// failed write is ignored.
pub fn print_banner(addr: SocketAddr, keys: &DemoKeys) {
    use std::io::Write;
    let sign_ins: String = keys
        .accounts
        .iter()
        .map(|a| format!("  {:<8} {}  /  {}\n", a.role.as_str(), a.email, a.password))
        .collect();
    let _ = writeln!(
        std::io::stdout(),
        "\nLivora demo running on http://{addr}\n\n  dashboard:  http://{addr}/  (sign in below)\n{sign_ins}\n  tenant:     {}\n  write key:  {}\n  secret key: {}\n\n\
         Try:\n  curl -s 'http://{addr}/api/v1/events?limit=5' -H 'Authorization: Bearer {}'\n",
        keys.tenant_id,
        keys.write_key,
        keys.secret_key,
        keys.secret_key
    );
}

/// Generates traffic until the process stops.
pub async fn run(addr: SocketAddr, write_key: String, opts: DemoOptions) {
    if let Err(e) = generate(addr, &write_key, &opts).await {
        tracing::error!(error = %e, "demo generator stopped");
    }
}

async fn generate(addr: SocketAddr, write_key: &str, opts: &DemoOptions) -> anyhow::Result<()> {
    let client = Client::new(addr, write_key);
    let mut shop = Shop::with_population(42, 5_000);
    let now = Utc::now();
    let mut batch = Vec::new();
    // History: sessions spread over the backfill window, busier at busy times.
    let sessions = opts.backfill_days as usize * 150;
    let since = now - chrono::Duration::days(i64::from(opts.backfill_days.max(1)));
    for _ in 0..sessions {
        let at = shop.seasonal_start(since, now - chrono::Duration::hours(1));
        batch.extend(before(shop.session(at), now));
        if batch.len() >= 400 {
            send(&client, &mut batch).await?;
        }
    }
    send(&client, &mut batch).await?;
    tracing::info!(sessions, "demo history sent");
    // Live traffic: about `rate` events a second.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        while batch.len() < opts.rate as usize {
            // A session that is ending now began some minutes ago.
            batch.extend(shop.session(Utc::now() - chrono::Duration::minutes(20)));
        }
        send(&client, &mut batch).await?;
    }
}

async fn send(client: &Client, batch: &mut Vec<Value>) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let body = json!({ "batch": std::mem::take(batch), "sentAt": Utc::now().to_rfc3339() });
    let (status, resp) = client
        .post("/v1/batch", Bytes::from(body.to_string()))
        .await
        .context("demo generator cannot reach the server")?;
    if status != 200 {
        anyhow::bail!(
            "server answered {status}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    Ok(())
}

const PRODUCTS: &[(&str, &str, f64)] = &[
    ("Trail Running Shoes", "Shoes", 129.0),
    ("City Sneakers", "Shoes", 89.0),
    ("Leather Boots", "Shoes", 179.0),
    ("Rain Jacket", "Outerwear", 149.0),
    ("Down Parka", "Outerwear", 249.0),
    ("Fleece Hoodie", "Outerwear", 69.0),
    ("Merino T-Shirt", "Tops", 49.0),
    ("Linen Shirt", "Tops", 59.0),
    ("Yoga Leggings", "Bottoms", 64.0),
    ("Denim Jeans", "Bottoms", 99.0),
    ("Canvas Backpack", "Accessories", 79.0),
    ("Wool Beanie", "Accessories", 25.0),
];

const COUNTRIES: &[&str] = &["US", "GB", "DE", "FR", "IN", "BR", "JP", "CA"];

/// A deterministic generator of shop sessions.
///
/// Two ways to pick who visits: an open population (every session is a new visitor, or with
/// 30 % odds a returning one), or a fixed population of `persons` where a few are regulars
/// (a skewed draw, so repeat buyers exist) and visitors stay anonymous until they sign up
/// or buy, then identify and are known on later visits.
pub struct Shop {
    pub(crate) rng: StdRng,
    next_person: u64,
    /// Fixed population size, if any.
    population: Option<u64>,
    /// Persons who identified (fixed population only), one bit each.
    known: Vec<u64>,
}

impl Shop {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            next_person: 0,
            population: None,
            known: Vec::new(),
        }
    }

    /// A shop with a fixed population of `persons` (at least 1).
    pub fn with_population(seed: u64, persons: u64) -> Self {
        let persons = persons.max(1);
        Self {
            population: Some(persons),
            known: vec![0; persons.div_ceil(64) as usize],
            ..Self::new(seed)
        }
    }

    fn pick_person(&mut self) -> (u64, bool) {
        match self.population {
            Some(n) => {
                // u³ skews towards low ids: a small core of regulars, a long tail of
                // one-time visitors.
                let u: f64 = self.rng.random();
                let p = ((u * u * u) * n as f64) as u64 % n;
                let known = self.known[(p / 64) as usize] & (1 << (p % 64)) != 0;
                (p, known)
            }
            None => {
                let returning = self.next_person > 0 && self.rng.random_bool(0.3);
                let person = if returning {
                    self.rng.random_range(0..self.next_person)
                } else {
                    self.next_person += 1;
                    self.next_person - 1
                };
                (person, returning && person % 2 == 0)
            }
        }
    }

    fn mark_known(&mut self, p: u64) {
        if self.population.is_some() {
            self.known[(p / 64) as usize] |= 1 << (p % 64);
        }
    }

    /// A session start in `[from, to)`, more likely at busy times: evenings, weekends, and
    /// the weeks before Christmas (Black Friday week most of all); least in early summer.
    pub fn seasonal_start(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> DateTime<Utc> {
        let span = (to - from).num_seconds().max(1);
        loop {
            let t = from + chrono::Duration::seconds(self.rng.random_range(0..span));
            if self.rng.random::<f64>() * MAX_SEASON_WEIGHT < season_weight(t) {
                return t;
            }
        }
    }

    /// One visit: a returning or a new visitor browsing, maybe buying.
    pub fn session(&mut self, start: DateTime<Utc>) -> Vec<Value> {
        let (person, known) = self.pick_person();
        let anon = format!("anon-{person:06}");
        let user = format!("user-{person:06}");
        let country = COUNTRIES[(person as usize) % COUNTRIES.len()];
        let mut t = start;
        let mut out = Vec::new();
        let mut msg = |t: DateTime<Utc>, mut m: Value| {
            m["anonymousId"] = json!(anon);
            if known {
                m["userId"] = json!(user);
            }
            m["timestamp"] = json!(t.to_rfc3339());
            m["context"] = json!({ "locale": "en-US", "location": { "country": country } });
            out.push(m);
        };
        msg(
            t,
            json!({"type": "page", "name": "Home", "properties": {"path": "/", "title": "Home"}}),
        );
        let mut cart: Vec<(usize, u32)> = Vec::new();
        for _ in 0..self.rng.random_range(1..5) {
            t += chrono::Duration::seconds(self.rng.random_range(5..120));
            let p = self.rng.random_range(0..PRODUCTS.len());
            let (name, category, price) = PRODUCTS[p];
            let product = json!({
                "product_id": format!("p{p:03}"), "name": name, "category": category,
                "price": price, "currency": "USD"
            });
            msg(
                t,
                json!({"type": "track", "event": "Product Viewed", "properties": product}),
            );
            if self.rng.random_bool(0.35) {
                let qty = self.rng.random_range(1..3);
                cart.push((p, qty));
                t += chrono::Duration::seconds(self.rng.random_range(5..60));
                let mut added = product.clone();
                added["quantity"] = json!(qty);
                msg(
                    t,
                    json!({"type": "track", "event": "Product Added", "properties": added}),
                );
            }
        }
        if cart.is_empty() || !self.rng.random_bool(0.5) {
            // Some browsers sign up without buying.
            if !known && self.population.is_some() && self.rng.random_bool(0.05) {
                t += chrono::Duration::seconds(self.rng.random_range(10..120));
                out.push(
                    json!({"type": "track", "event": "Signed Up", "anonymousId": anon,
                    "timestamp": t.to_rfc3339(), "properties": {"method": "email"}}),
                );
                out.push(json!({
                    "type": "identify", "userId": user, "anonymousId": anon,
                    "timestamp": t.to_rfc3339(),
                    "traits": {"email": format!("{user}@example.com"), "country": country, "plan": "free"}
                }));
                self.mark_known(person);
            }
            return out;
        }
        let total: f64 = cart
            .iter()
            .map(|(p, q)| PRODUCTS[*p].2 * f64::from(*q))
            .sum();
        t += chrono::Duration::seconds(self.rng.random_range(10..300));
        msg(
            t,
            json!({"type": "track", "event": "Checkout Started",
            "properties": {"value": total, "currency": "USD"}}),
        );
        if !self.rng.random_bool(0.7) {
            return out;
        }
        t += chrono::Duration::seconds(self.rng.random_range(20..600));
        if !known {
            out.push(json!({
                "type": "identify", "userId": user, "anonymousId": anon,
                "timestamp": t.to_rfc3339(),
                "traits": {"email": format!("{user}@example.com"), "country": country}
            }));
            self.mark_known(person);
        }
        let products: Vec<Value> = cart
            .iter()
            .map(|(p, q)| {
                json!({"product_id": format!("p{p:03}"), "name": PRODUCTS[*p].0,
                "category": PRODUCTS[*p].1, "price": PRODUCTS[*p].2, "quantity": q})
            })
            .collect();
        let order_id = format!("o-{}-{}", person, t.timestamp_millis());
        // The order's category is its first product's, so reports can break revenue down.
        let category = PRODUCTS[cart[0].0].1;
        out.push(json!({
            "type": "track", "event": "Order Completed", "userId": user, "anonymousId": anon,
            "timestamp": t.to_rfc3339(),
            "properties": {"order_id": order_id, "total": total, "revenue": total,
                "currency": "USD", "category": category, "products": products}
        }));
        // A few orders come back.
        if self.population.is_some() && self.rng.random_bool(0.04) {
            let later = t + chrono::Duration::seconds(self.rng.random_range(86_400..14 * 86_400));
            out.push(json!({
                "type": "track", "event": "Order Refunded", "userId": user,
                "timestamp": later.to_rfc3339(),
                "properties": {"order_id": order_id, "total": total, "currency": "USD", "category": category}
            }));
        }
        out
    }
}

/// The messages of `msgs` timed before `end` (a refund may fall after the generated range).
pub fn before(msgs: Vec<Value>, end: DateTime<Utc>) -> impl Iterator<Item = Value> {
    msgs.into_iter().filter(move |m| {
        m["timestamp"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t < end)
    })
}

/// The largest value [`season_weight`] takes.
const MAX_SEASON_WEIGHT: f64 = 1.3 * 1.35 * 1.3 * 1.4;

/// How busy the shop is at `t` (UTC): time of day × day of week × time of year.
fn season_weight(t: DateTime<Utc>) -> f64 {
    use chrono::{Datelike, Timelike};
    const HOURS: [f64; 24] = [
        0.3, 0.2, 0.15, 0.15, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0, 1.0, 1.05, 1.1, 1.05, 1.0, 1.0, 1.05,
        1.1, 1.2, 1.3, 1.3, 1.2, 0.9, 0.5,
    ];
    const WEEKDAYS: [f64; 7] = [0.9, 0.95, 1.0, 1.0, 1.1, 1.35, 1.25]; // Monday first
    let doy = f64::from(t.ordinal0());
    // Peak in mid-December, trough in mid-June.
    let year = 1.0 + 0.3 * (2.0 * std::f64::consts::PI * (doy - 348.0) / 365.0).cos();
    let black_friday = (t.month() == 11 && t.day() >= 24) || (t.month() == 12 && t.day() <= 1);
    HOURS[t.hour() as usize]
        * WEEKDAYS[t.weekday().num_days_from_monday() as usize]
        * year
        * if black_friday { 1.4 } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_valid_segment_messages() {
        let mut shop = Shop::new(1);
        let now = Utc::now();
        let mut orders = 0;
        for _ in 0..500 {
            for m in shop.session(now) {
                let text = m.to_string();
                let parsed = livora_model::ingest::parse_item(&text).expect("parses");
                let env = livora_model::ingest::Envelope {
                    received_at: now,
                    client_ip: None,
                    future_tolerance: chrono::Duration::hours(1),
                    sent_at: None,
                    context: None,
                    integrations: None,
                };
                let ev = livora_model::ingest::normalise(parsed, None, &env).expect("valid");
                orders += usize::from(ev.event.as_deref() == Some("Order Completed"));
            }
        }
        assert!(orders > 10, "the funnel reaches orders: {orders}");
    }
}
