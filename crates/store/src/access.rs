//! Who may do what: staff roles, API key scopes, and the permissions both grant.
//!
//! The matrix ([`Role::permissions`], [`Scope::permissions`]) is the one place access is
//! decided; the server's routes each declare one [`Permission`], and the README prints the
//! matrix from [`matrix_markdown`] (a test keeps the two equal).

use serde::{Deserialize, Serialize};

/// A staff member's role in one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including granting ownership and tenant settings.
    Owner,
    /// Everything but ownership and tenant settings.
    Admin,
    /// Analytics and segments, without personal data.
    Analyst,
    /// Analytics, personal data, segments and workflows.
    Marketer,
    /// Analytics and personal data (customer profiles).
    Sales,
    /// Analytics, personal data, channels and turning workflows on and off.
    Ops,
    /// Aggregated analytics only.
    Viewer,
}

/// What an API key may do (a key has one or more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send events (`/v1/*`); the only scope of a write key.
    Ingest,
    /// Read analytics and events.
    Read,
    /// The tenant administration an `admin` staff member has.
    Admin,
}

/// One thing an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// Send events.
    #[serde(rename = "events.ingest")]
    Ingest,
    /// Aggregated analytics: funnels, retention, trends, paths, commerce.
    #[serde(rename = "analytics.read")]
    ReadAnalytics,
    /// Personal data: raw events, person ids and properties.
    #[serde(rename = "pii.view")]
    ViewPii,
    #[serde(rename = "segments.edit")]
    EditSegments,
    #[serde(rename = "workflows.edit")]
    EditWorkflows,
    #[serde(rename = "workflows.enable")]
    EnableWorkflows,
    /// Messaging channels and their secrets.
    #[serde(rename = "channels.manage")]
    ManageChannels,
    /// Staff members, invitations and roles.
    #[serde(rename = "members.manage")]
    ManageMembers,
    #[serde(rename = "keys.manage")]
    ManageKeys,
    /// Bulk data export (raw event pages, person export).
    #[serde(rename = "data.export")]
    ExportData,
    #[serde(rename = "person.erase")]
    ErasePerson,
    #[serde(rename = "audit.read")]
    ReadAudit,
    /// Tenant settings and granting ownership.
    #[serde(rename = "tenant.manage")]
    ManageTenant,
    /// Record a person's consent answers.
    #[serde(rename = "consent.manage")]
    ManageConsent,
    /// Correct a person's identity (un-merge).
    #[serde(rename = "people.edit")]
    EditPeople,
    /// Train models now and put an older version back in use.
    #[serde(rename = "models.manage")]
    ManageModels,
}

impl Permission {
    pub const ALL: [Permission; 16] = [
        Self::Ingest,
        Self::ReadAnalytics,
        Self::ViewPii,
        Self::EditSegments,
        Self::EditWorkflows,
        Self::EnableWorkflows,
        Self::ManageChannels,
        Self::ManageMembers,
        Self::ManageKeys,
        Self::ExportData,
        Self::ErasePerson,
        Self::ReadAudit,
        Self::ManageTenant,
        Self::ManageConsent,
        Self::EditPeople,
        Self::ManageModels,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "events.ingest",
            Self::ReadAnalytics => "analytics.read",
            Self::ViewPii => "pii.view",
            Self::EditSegments => "segments.edit",
            Self::EditWorkflows => "workflows.edit",
            Self::EnableWorkflows => "workflows.enable",
            Self::ManageChannels => "channels.manage",
            Self::ManageMembers => "members.manage",
            Self::ManageKeys => "keys.manage",
            Self::ExportData => "data.export",
            Self::ErasePerson => "person.erase",
            Self::ReadAudit => "audit.read",
            Self::ManageTenant => "tenant.manage",
            Self::ManageConsent => "consent.manage",
            Self::EditPeople => "people.edit",
            Self::ManageModels => "models.manage",
        }
    }
}

impl Role {
    pub const ALL: [Role; 7] = [
        Self::Owner,
        Self::Admin,
        Self::Analyst,
        Self::Marketer,
        Self::Sales,
        Self::Ops,
        Self::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Analyst => "analyst",
            Self::Marketer => "marketer",
            Self::Sales => "sales",
            Self::Ops => "ops",
            Self::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this role holds `p`. Staff never ingest: that is what write keys are for.
    pub fn allows(self, p: Permission) -> bool {
        use Permission as P;
        match self {
            Self::Owner => p != P::Ingest,
            Self::Admin => !matches!(p, P::Ingest | P::ManageTenant),
            Self::Analyst => matches!(p, P::ReadAnalytics | P::EditSegments | P::ManageModels),
            Self::Marketer => matches!(
                p,
                P::ReadAnalytics
                    | P::ViewPii
                    | P::EditSegments
                    | P::EditWorkflows
                    | P::EnableWorkflows
                    | P::ManageConsent
                    | P::EditPeople
            ),
            Self::Sales => matches!(p, P::ReadAnalytics | P::ViewPii),
            Self::Ops => matches!(
                p,
                P::ReadAnalytics
                    | P::ViewPii
                    | P::EnableWorkflows
                    | P::ManageChannels
                    | P::ManageConsent
                    | P::EditPeople
            ),
            Self::Viewer => p == P::ReadAnalytics,
        }
    }
}

impl Scope {
    pub const ALL: [Scope; 3] = [Self::Ingest, Self::Read, Self::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether a key with this scope holds `p`.
    pub fn allows(self, p: Permission) -> bool {
        match self {
            Self::Ingest => p == Permission::Ingest,
            Self::Read => matches!(p, Permission::ReadAnalytics | Permission::ViewPii),
            // A key is not a person: it cannot manage staff members.
            Self::Admin => Role::Admin.allows(p) && p != Permission::ManageMembers,
        }
    }
}

/// Parses a comma-separated scope list (`read,admin`).
pub fn parse_scopes(text: &str) -> Result<Vec<Scope>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let s = Scope::parse(part)
            .ok_or_else(|| format!("{part:?} is not a scope: use ingest, read or admin"))?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out.sort();
    Ok(out)
}

/// The permission matrix as a Markdown table (roles and key scopes as columns).
pub fn matrix_markdown() -> String {
    let mut s = String::from("| permission |");
    for r in Role::ALL {
        s.push_str(&format!(" {} |", r.as_str()));
    }
    for k in Scope::ALL {
        s.push_str(&format!(" key:{} |", k.as_str()));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(Role::ALL.len() + Scope::ALL.len()));
    s.push('\n');
    for p in Permission::ALL {
        s.push_str(&format!("| `{}` |", p.as_str()));
        let mark = |yes: bool| if yes { " ✓ |" } else { " |" };
        for r in Role::ALL {
            s.push_str(mark(r.allows(p)));
        }
        for k in Scope::ALL {
            s.push_str(mark(k.allows(p)));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_owner_is_the_widest_role() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            for p in Permission::ALL {
                assert!(!r.allows(p) || Role::Owner.allows(p), "{r:?} {p:?}");
            }
        }
        for p in Permission::ALL {
            let json = serde_json::to_string(&p).expect("json");
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert_eq!(
            parse_scopes("admin, read,read"),
            Ok(vec![Scope::Read, Scope::Admin])
        );
        assert!(parse_scopes("write").is_err());
        assert!(!Role::Analyst.allows(Permission::ViewPii));
        assert!(!Scope::Admin.allows(Permission::ManageMembers));
    }

    /// The README prints the matrix as the code decides it.
    #[test]
    fn the_readme_shows_this_matrix() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("<!-- permission-matrix")
            .and_then(|i| readme[i..].find('\n').map(|j| i + j + 1))
            .expect("README has the matrix");
        let end = readme
            .find("<!-- /permission-matrix -->")
            .expect("end marker");
        assert_eq!(&readme[start..end], matrix_markdown());
    }
}
