//! Clinic networks: organisations and their member clinics.
//!
//! An organisation is a row of `tenants` of kind `organisation`, with an
//! `org_…` id, so its keys, endpoints and workflows are kept like a
//! clinic's. A clinic's `org_id` names its organisation while it is a
//! member; an organisation's own row names itself. The network's log is the
//! events whose `org_id` is the organisation's, numbered by
//! `network_sequence` from the organisation's `last_sequence`, taken under
//! its row lock in the writing transaction (`next_sequence`, in the
//! records' SQL) exactly as a tenant's sequence is: gap-free and in commit
//! order, on every node.

pub(crate) mod sql;

use eventflow_model::id::TenantId;

use crate::error::Result;
use crate::keys::NewTenant;

/// A member clinic, as `/v1/clinics` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Clinic {
    /// `ten_…`.
    pub id: String,
    pub name: String,
    /// When it became a member (of this organisation, the last time).
    pub joined_at: String,
}

/// A change to an organisation or to who belongs to it.
#[derive(Debug, Clone)]
pub enum NetworkChange {
    /// A new organisation, with its first key (every scope).
    CreateOrganisation { name: String, key_hash: String },
    /// A new clinic, a member from now on, with its first key (every
    /// scope), named `key_name`.
    CreateClinic {
        org: TenantId,
        name: String,
        key_hash: String,
        key_name: String,
        /// Refused (409) when the organisation already has this many.
        max_clinics: u32,
    },
    /// An existing clinic joins: its events are in the network's log from
    /// its next write on. A clinic belongs to one organisation at most.
    AddClinic {
        org: TenantId,
        clinic: TenantId,
        max_clinics: u32,
    },
    /// A clinic leaves: its next events are its own only. It and its data
    /// stay.
    RemoveClinic { org: TenantId, clinic: TenantId },
}

/// What a [`NetworkChange`] made: the new tenant and its first key (an
/// organisation or a clinic), and the clinic as a member (for a removal, as
/// it was; `None` when it was no member).
#[derive(Debug, Clone, Default)]
pub struct NetworkDone {
    pub tenant: Option<NewTenant>,
    pub clinic: Option<Clinic>,
}

/// Organisations and their clinics.
#[async_trait::async_trait]
pub trait Networks: Send + Sync + 'static {
    /// Makes a change (in the writer, so it commits between writes: a
    /// clinic's events are the network's from the write after it joins).
    /// An organisation or clinic that does not exist is `NotFound`; a clinic
    /// of another organisation, or a name taken, is `Conflict`.
    async fn change_network(&self, change: NetworkChange) -> Result<NetworkDone>;

    /// The organisation's member clinics, oldest member first.
    async fn clinics(&self, org: &TenantId) -> Result<Vec<Clinic>>;

    /// The clinic, if it is a member of the organisation now.
    async fn clinic(&self, org: &TenantId, clinic: &TenantId) -> Result<Option<Clinic>>;
}

/// The SQL the writer's connection runs for networks (inside its group
/// transaction).
#[async_trait::async_trait]
pub(crate) trait NetworkConn: Send {
    /// Inserts a tenant's row of `kind` with its organisation (an
    /// organisation's is itself) and when it joined; `false` when the name
    /// is taken.
    async fn insert_tenant_row(
        &mut self,
        id: &str,
        name: &str,
        kind: &str,
        org: Option<&str>,
        joined_at: Option<&str>,
        now: &str,
    ) -> Result<bool>;
    /// The tenant's kind and organisation, locking its row to commit.
    async fn membership(&mut self, tenant: &str) -> Result<Option<(String, Option<String>)>>;
    /// Sets (or clears) a clinic's organisation and when it joined.
    async fn set_membership(
        &mut self,
        clinic: &str,
        org: Option<&str>,
        joined_at: Option<&str>,
    ) -> Result<()>;
    /// The clinic as a member of the organisation.
    async fn member(&mut self, org: &str, clinic: &str) -> Result<Option<Clinic>>;
    /// How many member clinics the organisation has.
    async fn count_members(&mut self, org: &str) -> Result<i64>;
    /// Where rows are locked (PostgreSQL): locks the rows of `tenants` and
    /// of their organisations, clinics first, then organisations, each by
    /// id. A writing transaction locks a clinic's row and then its
    /// organisation's; a group of several tenants' writes takes them all
    /// in this one order first, so groups on two nodes cannot wait on each
    /// other in a cycle.
    async fn lock_in_order(&mut self, tenants: &[&str]) -> Result<()>;
}

/// Whether a change ends what an organisation key may act on: keys checked
/// before (streams, long polls) are checked again.
pub(crate) fn invalidates(change: &NetworkChange) -> bool {
    matches!(change, NetworkChange::RemoveClinic { .. })
}

/// Whether `tenant` is a live organisation, as [`NetworkConn::membership`]
/// read it.
pub(crate) fn is_organisation(membership: &Option<(String, Option<String>)>) -> bool {
    matches!(membership, Some((kind, _)) if kind == ORGANISATION)
}

/// The `kind` of an organisation's row.
pub(crate) const ORGANISATION: &str = "organisation";
/// The `kind` of a clinic's row.
pub(crate) const CLINIC: &str = "clinic";

/// `Conflict` when the organisation has `max` member clinics already
/// (counted under its row lock, taken before).
async fn full<C: NetworkConn + ?Sized>(conn: &mut C, org: &TenantId, max: u32) -> Result<()> {
    if conn.count_members(org).await? >= i64::from(max) {
        return Err(crate::error::StoreError::Conflict(format!(
            "an organisation has at most {max} member clinics (limits.clinics_per_organisation)"
        )));
    }
    Ok(())
}

/// Applies a change inside the writer's transaction.
pub(crate) async fn apply<
    C: NetworkConn + crate::keys::KeyConn + crate::delivery::sql::QueueConn + ?Sized,
>(
    conn: &mut C,
    change: &NetworkChange,
    now: &str,
) -> Result<NetworkDone> {
    use crate::error::StoreError;
    use eventflow_model::id::KeyId;
    let no_org = |org: &TenantId| StoreError::NotFound(format!("no organisation {org}"));
    match change {
        NetworkChange::CreateOrganisation { name, key_hash } => {
            let id = TenantId::fresh_organisation();
            if !conn
                .insert_tenant_row(&id, name, ORGANISATION, Some(&id), None, now)
                .await?
            {
                return Err(StoreError::Conflict(format!(
                    "a tenant named {name:?} already exists"
                )));
            }
            let key_id = KeyId::fresh();
            conn.insert_api_key(&key_id, &id, key_hash, "orgs create", now)
                .await?;
            Ok(NetworkDone {
                tenant: Some(NewTenant {
                    tenant_id: id,
                    key_id,
                }),
                clinic: None,
            })
        }
        NetworkChange::CreateClinic {
            org,
            name,
            key_hash,
            key_name,
            max_clinics,
        } => {
            if !is_organisation(&conn.membership(org).await?) {
                return Err(no_org(org));
            }
            full(conn, org, *max_clinics).await?;
            let id = TenantId::fresh();
            if !conn
                .insert_tenant_row(&id, name, CLINIC, Some(org), Some(now), now)
                .await?
            {
                return Err(StoreError::Conflict(format!(
                    "a tenant named {name:?} already exists"
                )));
            }
            let key_id = KeyId::fresh();
            conn.insert_api_key(&key_id, &id, key_hash, key_name, now)
                .await?;
            Ok(NetworkDone {
                tenant: Some(NewTenant {
                    tenant_id: id.clone(),
                    key_id,
                }),
                clinic: conn.member(org, &id).await?,
            })
        }
        NetworkChange::AddClinic {
            org,
            clinic,
            max_clinics,
        } => {
            // The clinic's row, then the organisation's: the order in which
            // a write takes them.
            let joining = conn.membership(clinic).await?;
            if !is_organisation(&conn.membership(org).await?) {
                return Err(no_org(org));
            }
            match joining {
                None => return Err(StoreError::NotFound(format!("no clinic {clinic}"))),
                Some((kind, _)) if kind == ORGANISATION => {
                    return Err(StoreError::Conflict(format!(
                        "{clinic} is an organisation, not a clinic"
                    )));
                }
                Some((_, Some(current))) if current != org.as_str() => {
                    return Err(StoreError::Conflict(format!(
                        "{clinic} is a member of another organisation: a clinic belongs to one at most"
                    )));
                }
                Some((_, Some(_))) => {}
                Some((_, None)) => {
                    full(conn, org, *max_clinics).await?;
                    // A clinic that forbids full payloads joins no network
                    // whose endpoints would get its patients' records.
                    crate::delivery::rules::no_full_endpoints_reach(conn, clinic, org).await?;
                    conn.set_membership(clinic, Some(org), Some(now)).await?
                }
            }
            Ok(NetworkDone {
                tenant: None,
                clinic: conn.member(org, clinic).await?,
            })
        }
        NetworkChange::RemoveClinic { org, clinic } => {
            // Under the clinic's row lock, checked there: its next event is
            // its own only.
            match conn.membership(clinic).await? {
                Some((_, Some(current))) if current == org.as_str() => {}
                _ => return Ok(NetworkDone::default()),
            }
            let member = conn.member(org, clinic).await?;
            conn.set_membership(clinic, None, None).await?;
            // Other nodes check their open streams' keys again.
            conn.announce_keys().await?;
            Ok(NetworkDone {
                tenant: None,
                clinic: member,
            })
        }
    }
}
