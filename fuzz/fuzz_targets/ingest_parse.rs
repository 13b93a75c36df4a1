//! The ingestion parser: a request body as a batch envelope, each item parsed and normalised,
//! and the body as a single message. Nothing may panic; a normalised event must serialise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livora_model::EventType;
use livora_model::ingest::{self, Envelope};

fuzz_target!(|data: &[u8]| {
    let received_at = chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap_or_default();
    let env = Envelope {
        received_at,
        client_ip: Some("127.0.0.1"),
        future_tolerance: chrono::Duration::seconds(600),
        sent_at: None,
        context: None,
        integrations: None,
    };
    if let Ok(batch) = ingest::parse_batch(data) {
        let env = Envelope {
            sent_at: batch.sent_at.as_deref(),
            context: batch.context.as_ref(),
            integrations: batch.integrations.as_ref(),
            ..env.clone()
        };
        for item in batch.batch.iter() {
            if let Ok(m) = ingest::parse_item(item.get())
                && let Ok(event) = ingest::normalise(m, None, &env)
            {
                serde_json::to_vec(&event).expect("a normalised event serialises");
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(m) = ingest::parse_item(text)
    {
        let _ = ingest::write_key_of(text);
        if let Ok(event) = ingest::normalise(m, Some(EventType::Track), &env) {
            serde_json::to_vec(&event).expect("a normalised event serialises");
        }
    }
});
