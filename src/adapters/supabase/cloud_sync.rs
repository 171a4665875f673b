//! [`SupabaseCloudSync`]: the [`CloudSync`] port over PostgREST.
//!
//! # Requests
//!
//! | method                  | request                                                           |
//! |-------------------------|-------------------------------------------------------------------|
//! | `upsert_messages`       | `POST /messages?on_conflict=session_id,sequence_number` (array)    |
//! | `upsert_repository`     | `POST /repositories?on_conflict=id`                               |
//! | `upsert_session`        | `POST /sessions?on_conflict=id`                                   |
//! | `upsert_device`         | `POST /devices?on_conflict=id`                                    |
//! | `put_key_wraps`         | `POST /session_key_wraps?on_conflict=session_id,key_epoch,recipient_device_id` |
//! | `delete_*`              | `DELETE /<table>?id=eq.<id>` (no row matched is success)           |
//! | `end_session`           | `PATCH /sessions?id=eq.<id>`                                      |
//! | `update_runtime_status` | `PATCH /sessions?id=eq.<id>&or=(…is.null,…lt.<ms>)`               |
//! | `revoke_device`         | `PATCH /devices?id=eq.<id>&revoked_at_ms=is.null`, then a lookup when nothing matched |
//! | `fetch_*`, `list_devices` | `GET` with the columns named in `select` and an explicit `order` |
//!
//! Upserts send `Prefer: resolution=merge-duplicates,return=minimal` (without `resolution=`,
//! PostgREST treats `on_conflict` as a plain insert and answers 409 on duplicates). A bulk
//! upsert is one `INSERT … ON CONFLICT` statement, so a batch lands whole or not at all.
//! Conditional updates send `Prefer: return=minimal,count=exact` and read the number of rows
//! changed from the total in `Content-Range` (`0-0/1`, `*/0`): PostgREST answers a `PATCH`
//! that matches nothing with success, never 404. (Counting the rows of a
//! `return=representation` answer would also work, except that PostgREST 12.0 fails an
//! `or=` filter combined with a returned representation with 42703 "column does not
//! exist", which the runtime-status update needs.)
//!
//! Rows never carry `user_id`: the column defaults to `auth.uid()` and row-level security
//! refuses any other owner, so the token alone decides whose rows these are.
//!
//! # Choices beyond the port's wording
//!
//! - `upsert_device` leaves out `last_seen_at_ms` and `revoked_at_ms` when they are `None`,
//!   so re-registering a device never clears what the cloud already knows (a revocation
//!   cannot be undone anyway: the schema's trigger refuses it).
//! - `revoke_device` keeps the first revocation time: revoking a revoked device changes
//!   nothing and reports `true` (the row exists), so the call is idempotent even when retried
//!   with a later timestamp.
//! - `update_runtime_status` applies only a strictly newer `updated_at_ms`; an equal one
//!   reports `false`.

use std::fmt;

use async_trait::async_trait;
use reqwest::{Method, Url};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;
use serde_json::Value;

use super::config::SupabaseConfig;
use super::http::{decode_json, encode_json, Answer, Failure, HttpClient};
use crate::domain::crypto::SessionKeyWrapRow;
use crate::domain::ids::{DeviceId, RepositoryId, SessionId};
use crate::ports::cloud::{
    AccessToken, CloudDeviceRow, CloudError, CloudMessageRow, CloudRepositoryRow, CloudSessionRow,
    CloudSync,
};

const MESSAGES: &str = "messages";
const REPOSITORIES: &str = "repositories";
const SESSIONS: &str = "sessions";
const DEVICES: &str = "devices";
const KEY_WRAPS: &str = "session_key_wraps";

const MESSAGE_COLUMNS: &str = "id,session_id,sequence_number,role,content_ciphertext,\
    content_nonce,key_epoch,encryption_alg,sender_device_id,created_at_ms";
const DEVICE_COLUMNS: &str = "id,name,platform,x25519_public_key,ed25519_public_key,\
    last_seen_at_ms,revoked_at_ms";
const KEY_WRAP_COLUMNS: &str = "session_id,key_epoch,recipient_device_id,sender_device_id,\
    ephemeral_public_key,nonce,ciphertext,signature";

const PREFER_UPSERT: &str = "resolution=merge-duplicates,return=minimal";
const PREFER_MINIMAL: &str = "return=minimal";
const PREFER_COUNT: &str = "return=minimal,count=exact";

/// The cloud copy of a user's sessions in Supabase tables, reached through PostgREST.
///
/// One `reqwest` client (rustls) is built once and shared by every call; clone the adapter
/// or hold it in an `Arc` to share it further. `Debug` shows the endpoints, never a key or
/// a token.
#[derive(Clone)]
pub struct SupabaseCloudSync {
    http: HttpClient,
}

impl fmt::Debug for SupabaseCloudSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupabaseCloudSync")
            .field("config", self.http.config())
            .finish()
    }
}

/// The body of a device registration: `None` timestamps are left out so an upsert never
/// clears them.
#[derive(Serialize)]
struct DeviceUpsert<'a> {
    id: DeviceId,
    name: &'a str,
    platform: &'a str,
    x25519_public_key: &'a str,
    ed25519_public_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at_ms: Option<i64>,
}

#[derive(Serialize)]
struct EndSession {
    status: &'static str,
    ended_at_ms: i64,
}

#[derive(Serialize)]
struct RuntimeStatusUpdate<'a> {
    runtime_status: &'a Value,
    runtime_status_updated_at_ms: i64,
}

#[derive(Serialize)]
struct Revocation {
    revoked_at_ms: i64,
}

/// A PostgREST equality filter value.
fn eq(value: impl fmt::Display) -> String {
    format!("eq.{value}")
}

impl SupabaseCloudSync {
    /// Builds the adapter and its HTTP client. Fails only if the client cannot be built
    /// (reported as [`CloudError::Backend`]).
    pub fn new(config: SupabaseConfig) -> Result<Self, CloudError> {
        Ok(Self {
            http: HttpClient::new(config)?,
        })
    }

    /// The configuration the adapter was built with.
    pub fn config(&self) -> &SupabaseConfig {
        self.http.config()
    }

    fn url(&self, table: &str, query: &[(&str, &str)]) -> Result<Url, Failure> {
        let mut url = self.http.config().table_url(table)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends one request and returns the success body.
    async fn call(
        &self,
        method: Method,
        url: Url,
        token: &AccessToken,
        prefer: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, Failure> {
        let mut request = self.http.request(method, url, Some(token.expose_secret()));
        if let Some(prefer) = prefer {
            request = request.header("Prefer", prefer);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        self.http.execute(request, &[token.expose_secret()]).await
    }

    async fn upsert<T: Serialize + ?Sized>(
        &self,
        token: &AccessToken,
        table: &str,
        on_conflict: &str,
        rows: &T,
    ) -> Result<(), Failure> {
        let url = self.url(table, &[("on_conflict", on_conflict)])?;
        let body = encode_json(rows)?;
        self.call(Method::POST, url, token, Some(PREFER_UPSERT), Some(body))
            .await?;
        Ok(())
    }

    async fn delete_by_id(
        &self,
        token: &AccessToken,
        table: &str,
        id: impl fmt::Display,
    ) -> Result<(), Failure> {
        let url = self.url(table, &[("id", &eq(id))])?;
        self.call(Method::DELETE, url, token, Some(PREFER_MINIMAL), None)
            .await?;
        Ok(())
    }

    /// PATCHes the rows matching `filters` and returns how many changed.
    async fn update_count<T: Serialize>(
        &self,
        token: &AccessToken,
        table: &str,
        filters: &[(&str, &str)],
        patch: &T,
    ) -> Result<u64, Failure> {
        let url = self.url(table, filters)?;
        let body = encode_json(patch)?;
        let answer = self
            .call(Method::PATCH, url, token, Some(PREFER_COUNT), Some(body))
            .await?;
        answer.total_count()
    }

    async fn select<T: DeserializeOwned>(
        &self,
        token: &AccessToken,
        table: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<T>, Failure> {
        let url = self.url(table, query)?;
        let answer = self.call(Method::GET, url, token, None, None).await?;
        decode_json(&answer.body)
    }
}

#[async_trait]
impl CloudSync for SupabaseCloudSync {
    async fn upsert_messages(
        &self,
        token: &AccessToken,
        rows: &[CloudMessageRow],
    ) -> Result<(), CloudError> {
        if rows.is_empty() {
            return Ok(());
        }
        Ok(self
            .upsert(token, MESSAGES, "session_id,sequence_number", rows)
            .await?)
    }

    async fn fetch_messages(
        &self,
        token: &AccessToken,
        session: SessionId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<CloudMessageRow>, CloudError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let session = eq(session);
        let after = format!("gt.{after}");
        let limit = limit.to_string();
        Ok(self
            .select(
                token,
                MESSAGES,
                &[
                    ("select", MESSAGE_COLUMNS),
                    ("session_id", &session),
                    ("sequence_number", &after),
                    ("order", "sequence_number.asc"),
                    ("limit", &limit),
                ],
            )
            .await?)
    }

    async fn upsert_repository(
        &self,
        token: &AccessToken,
        row: &CloudRepositoryRow,
    ) -> Result<(), CloudError> {
        Ok(self.upsert(token, REPOSITORIES, "id", row).await?)
    }

    async fn delete_repository(
        &self,
        token: &AccessToken,
        id: RepositoryId,
    ) -> Result<(), CloudError> {
        Ok(self.delete_by_id(token, REPOSITORIES, id).await?)
    }

    async fn upsert_session(
        &self,
        token: &AccessToken,
        row: &CloudSessionRow,
    ) -> Result<(), CloudError> {
        Ok(self.upsert(token, SESSIONS, "id", row).await?)
    }

    async fn delete_session(&self, token: &AccessToken, id: SessionId) -> Result<(), CloudError> {
        Ok(self.delete_by_id(token, SESSIONS, id).await?)
    }

    async fn end_session(
        &self,
        token: &AccessToken,
        id: SessionId,
        ended_at_ms: i64,
    ) -> Result<bool, CloudError> {
        let id = eq(id);
        let patch = EndSession {
            status: "ended",
            ended_at_ms,
        };
        let changed = self
            .update_count(token, SESSIONS, &[("id", &id)], &patch)
            .await?;
        Ok(changed > 0)
    }

    async fn update_runtime_status(
        &self,
        token: &AccessToken,
        id: SessionId,
        status: &Value,
        updated_at_ms: i64,
    ) -> Result<bool, CloudError> {
        let id = eq(id);
        let older = format!(
            "(runtime_status_updated_at_ms.is.null,runtime_status_updated_at_ms.lt.{updated_at_ms})"
        );
        let patch = RuntimeStatusUpdate {
            runtime_status: status,
            runtime_status_updated_at_ms: updated_at_ms,
        };
        let changed = self
            .update_count(token, SESSIONS, &[("id", &id), ("or", &older)], &patch)
            .await?;
        Ok(changed > 0)
    }

    async fn upsert_device(
        &self,
        token: &AccessToken,
        row: &CloudDeviceRow,
    ) -> Result<(), CloudError> {
        let body = DeviceUpsert {
            id: row.id,
            name: &row.name,
            platform: &row.platform,
            x25519_public_key: &row.x25519_public_key,
            ed25519_public_key: &row.ed25519_public_key,
            last_seen_at_ms: row.last_seen_at_ms,
            revoked_at_ms: row.revoked_at_ms,
        };
        Ok(self.upsert(token, DEVICES, "id", &body).await?)
    }

    async fn list_devices(&self, token: &AccessToken) -> Result<Vec<CloudDeviceRow>, CloudError> {
        Ok(self
            .select(
                token,
                DEVICES,
                &[
                    ("select", DEVICE_COLUMNS),
                    ("order", "created_at_ms.asc,id.asc"),
                ],
            )
            .await?)
    }

    async fn revoke_device(
        &self,
        token: &AccessToken,
        id: DeviceId,
        revoked_at_ms: i64,
    ) -> Result<bool, CloudError> {
        let id = eq(id);
        let changed = self
            .update_count(
                token,
                DEVICES,
                &[("id", &id), ("revoked_at_ms", "is.null")],
                &Revocation { revoked_at_ms },
            )
            .await?;
        if changed > 0 {
            return Ok(true);
        }
        // Nothing changed: either the device is already revoked (true) or it does not exist.
        let existing: Vec<IgnoredAny> = self
            .select(token, DEVICES, &[("select", "id"), ("id", &id)])
            .await?;
        Ok(!existing.is_empty())
    }

    async fn put_key_wraps(
        &self,
        token: &AccessToken,
        rows: &[SessionKeyWrapRow],
    ) -> Result<(), CloudError> {
        if rows.is_empty() {
            return Ok(());
        }
        Ok(self
            .upsert(
                token,
                KEY_WRAPS,
                "session_id,key_epoch,recipient_device_id",
                rows,
            )
            .await?)
    }

    async fn fetch_key_wraps(
        &self,
        token: &AccessToken,
        session: SessionId,
        recipient: DeviceId,
    ) -> Result<Vec<SessionKeyWrapRow>, CloudError> {
        let session = eq(session);
        let recipient = eq(recipient);
        Ok(self
            .select(
                token,
                KEY_WRAPS,
                &[
                    ("select", KEY_WRAP_COLUMNS),
                    ("session_id", &session),
                    ("recipient_device_id", &recipient),
                    ("order", "key_epoch.asc"),
                ],
            )
            .await?)
    }
}
