//! The query parser: any body either is refused or parses into a query that validates and
//! runs (on an empty table and on a small one) without panicking.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use livora_columnar::Table;

fn small_table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = Table::default();
        let events = [
            r#"{"type":"track","event":"Product Viewed","userId":"u1","messageId":"1","timestamp":"2026-01-01T10:00:00Z","receivedAt":"2026-01-01T10:00:00Z","properties":{"price":10,"category":"a"},"context":{}}"#,
            r#"{"type":"track","event":"Order Completed","userId":"u1","messageId":"2","timestamp":"2026-01-02T10:00:00Z","receivedAt":"2026-01-02T10:00:00Z","properties":{"revenue":10,"order_id":"o1","products":[{"product_id":"p","price":10,"quantity":1}]},"context":{}}"#,
            r#"{"type":"identify","userId":"u2","anonymousId":"a2","messageId":"3","timestamp":"2026-01-03T10:00:00Z","receivedAt":"2026-01-03T10:00:00Z","traits":{"plan":"pro"},"context":{}}"#,
        ];
        for e in events {
            let _ = t.push_json(e.as_bytes());
        }
        t
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = serde_json::from_slice::<livora_analytics::Query>(data) else {
        return;
    };
    let _ = livora_analytics::run(&Table::default(), &query, chrono_tz::UTC);
    let _ = livora_analytics::run(small_table(), &query, chrono_tz::Europe::Paris);
});
