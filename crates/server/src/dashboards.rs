//! `/api/v1/dashboards`: a staff member's custom dashboards — widgets (a title, a chart
//! kind and the query it charts) and their places on the grid — private, or shared with
//! every member of the tenant. Anyone who may read analytics keeps their own; only the
//! owner changes or deletes one.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use livora_store::dashboards::Dashboard;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::access::{Actor, Principal};
use crate::error::{ApiError, Code};

/// Most widgets on one dashboard, and most bytes of widgets and layout together.
const MOST_WIDGETS: usize = 50;
const MOST_BYTES: usize = 256 * 1024;
/// What a widget may chart.
pub const KINDS: [&str; 4] = ["kpi", "trends", "funnel", "retention"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    shared: Option<bool>,
    #[serde(default)]
    widgets: Option<Vec<Value>>,
    #[serde(default)]
    layout: Option<Vec<Value>>,
}

type Body = Result<Json<DashboardBody>, axum::extract::rejection::JsonRejection>;

fn body(b: Body) -> Result<DashboardBody, ApiError> {
    b.map(|Json(b)| b)
        .map_err(|e| ApiError::new(Code::InvalidJson, e.body_text()))
}

fn owner(p: &Principal) -> String {
    match &p.actor {
        Actor::User { id, .. } => id.clone(),
        Actor::Key { id, .. } => format!("key:{id}"),
    }
}

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::new(Code::InvalidRequest, message).with("field", field.to_owned())
}

fn check_widgets(widgets: &[Value]) -> Result<(), ApiError> {
    if widgets.len() > MOST_WIDGETS {
        return Err(invalid(
            "widgets",
            format!("{} widgets: at most {MOST_WIDGETS}", widgets.len()),
        ));
    }
    for (i, w) in widgets.iter().enumerate() {
        let field = |k: &str| format!("widgets[{i}].{k}");
        let text = |k: &str| w.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        if text("id").is_none() {
            return Err(invalid(
                &field("id"),
                format!("{}: a non-empty string", field("id")),
            ));
        }
        if text("title").is_none() {
            return Err(invalid(
                &field("title"),
                format!("{}: a non-empty string", field("title")),
            ));
        }
        if !text("kind").is_some_and(|k| KINDS.contains(&k)) {
            return Err(invalid(
                &field("kind"),
                format!("{}: one of {}", field("kind"), KINDS.join(", ")),
            ));
        }
        if !w.get("query").is_some_and(Value::is_object) {
            return Err(invalid(
                &field("query"),
                format!("{}: the query it charts (an object)", field("query")),
            ));
        }
    }
    Ok(())
}

fn check_layout(layout: &[Value]) -> Result<(), ApiError> {
    for (i, l) in layout.iter().enumerate() {
        let ok = l.get("i").and_then(Value::as_str).is_some()
            && ["x", "y", "w", "h"]
                .iter()
                .all(|k| l.get(k).and_then(Value::as_u64).is_some_and(|n| n <= 1000));
        if !ok {
            return Err(invalid(
                &format!("layout[{i}]"),
                format!("layout[{i}]: {{i: a widget id, x, y, w, h: whole numbers up to 1000}}"),
            ));
        }
    }
    Ok(())
}

fn view(d: &Dashboard, p: &Principal) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "shared": d.shared,
        "mine": d.owner == owner(p),
        "widgets": serde_json::from_str::<Value>(&d.widgets).unwrap_or_else(|_| json!([])),
        "layout": serde_json::from_str::<Value>(&d.layout).unwrap_or_else(|_| json!([])),
        "updated_at": d.updated_at,
    })
}

fn fill(d: &mut Dashboard, b: DashboardBody) -> Result<(), ApiError> {
    if let Some(name) = b.name {
        let name = name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(invalid("name", "name: 1 to 200 characters".into()));
        }
        d.name = name;
    }
    if let Some(shared) = b.shared {
        d.shared = shared;
    }
    if let Some(w) = b.widgets {
        check_widgets(&w)?;
        d.widgets = Value::Array(w).to_string();
    }
    if let Some(l) = b.layout {
        check_layout(&l)?;
        d.layout = Value::Array(l).to_string();
    }
    if d.widgets.len() + d.layout.len() > MOST_BYTES {
        return Err(invalid(
            "widgets",
            format!("widgets and layout: at most {MOST_BYTES} bytes"),
        ));
    }
    d.updated_at = Utc::now();
    Ok(())
}

/// `GET /api/v1/dashboards`: the caller's and the shared ones.
pub async fn list(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let all = s.store.dashboards(p.tenant, &owner(&p)).await?;
    Ok(Json(
        json!({"dashboards": all.iter().map(|d| view(d, &p)).collect::<Vec<_>>()}),
    ))
}

/// `POST /api/v1/dashboards`.
pub async fn create(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    b: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b = body(b)?;
    if b.name.is_none() {
        return Err(invalid("name", "name: required".into()));
    }
    let mut d = Dashboard {
        id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        name: String::new(),
        owner: owner(&p),
        shared: false,
        widgets: "[]".into(),
        layout: "[]".into(),
        updated_at: Utc::now(),
    };
    fill(&mut d, b)?;
    s.store.put_dashboard(p.tenant, &d).await?;
    Ok((StatusCode::CREATED, Json(view(&d, &p))))
}

/// The dashboard `id` as the caller may change it: theirs, else 403 (shared) or 404.
async fn own(s: &AppState, p: &Principal, id: &str) -> Result<Dashboard, ApiError> {
    let d = s
        .store
        .dashboard(p.tenant, id)
        .await?
        .filter(|d| d.shared || d.owner == owner(p))
        .ok_or_else(|| ApiError::new(Code::NotFound, format!("no dashboard {id:?}")))?;
    if d.owner != owner(p) {
        return Err(ApiError::new(
            Code::Forbidden,
            "only its owner changes a shared dashboard",
        ));
    }
    Ok(d)
}

/// `PUT /api/v1/dashboards/{id}`: name, sharing, widgets or layout.
pub async fn update(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    b: Body,
) -> Result<Json<Value>, ApiError> {
    let b = body(b)?;
    let mut d = own(&s, &p, &id).await?;
    fill(&mut d, b)?;
    s.store.put_dashboard(p.tenant, &d).await?;
    Ok(Json(view(&d, &p)))
}

/// `DELETE /api/v1/dashboards/{id}`.
pub async fn delete(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    own(&s, &p, &id).await?;
    s.store.delete_dashboard(p.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
