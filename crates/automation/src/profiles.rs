//! [`People`] over the profiles service: persons as the profiles engine knows them.

use livora_model::{Event, TenantId};
use livora_profiles::PersonId;
use livora_profiles::segments::Engine;
use livora_profiles::service::ProfileService;
use serde_json::Value;

use crate::people::{People, Person};

fn person(engine: &Engine, id: PersonId, now: chrono::DateTime<chrono::Utc>) -> Option<Person> {
    let (id, p) = engine.profiles().get(id)?;
    let (segments, tags) = engine.memberships(id);
    let mut computed = match p.computed.to_json(now) {
        Value::Object(m) => m,
        _ => Default::default(),
    };
    // The models' predictions read as computed attributes (`best_hour`, `churn_risk`…).
    for (k, v) in &p.predictions {
        computed.insert(k.clone(), serde_json::json!(v));
    }
    let traits = p.traits.to_json();
    Some(Person {
        keys: engine.profiles().graph().keys(id),
        traits,
        computed,
        segments: segments.into_iter().map(str::to_owned).collect(),
        tags: tags.into_iter().map(str::to_owned).collect(),
        suggestions: Default::default(),
    })
}

impl People for ProfileService {
    fn of_event(&self, tenant: TenantId, event: &Event) -> Option<Person> {
        let t = self.tenant(tenant);
        let st = t.lock().unwrap_or_else(|e| e.into_inner());
        let graph = st.engine.profiles().graph();
        let id = livora_profiles::profile::identifiers(event, graph.rules())
            .iter()
            .find_map(|i| graph.person_of(i))?;
        person(&st.engine, id, self.now())
    }

    fn by_key(&self, tenant: TenantId, key: &str) -> Option<Person> {
        let t = self.tenant(tenant);
        let st = t.lock().unwrap_or_else(|e| e.into_inner());
        let id = st.engine.profiles().graph().person_of_key(key)?;
        person(&st.engine, id, self.now())
    }

    fn audience(&self, tenant: TenantId, segment: Option<&str>) -> Vec<Person> {
        let t = self.tenant(tenant);
        let st = t.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.now();
        let ids: Vec<PersonId> = match segment {
            Some(s) => st
                .engine
                .members(s, false)
                .map(|m| m.iter().collect())
                .unwrap_or_default(),
            None => st.engine.profiles().persons().collect(),
        };
        ids.into_iter()
            .filter_map(|id| person(&st.engine, id, now))
            .collect()
    }

    fn ready(&self, offset: u64) -> bool {
        self.applied() > offset
    }
}

/// The person holding an identifier (`phone`, `email`, …) now, by its value (normalised
/// as the identity graph does).
pub fn by_identifier(
    svc: &ProfileService,
    tenant: TenantId,
    kind: &str,
    value: &str,
) -> Option<Person> {
    let t = svc.tenant(tenant);
    let st = t.lock().unwrap_or_else(|e| e.into_inner());
    let graph = st.engine.profiles().graph();
    let id = livora_profiles::identity::Identifier::new(kind, value, graph.rules())?;
    let id = graph.person_of(&id)?;
    person(&st.engine, id, svc.now())
}
