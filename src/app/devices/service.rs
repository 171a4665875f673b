//! [`Devices`]: registering this device, distributing session keys, revoking devices and
//! receiving keys from other devices.
//!
//! # Distribution
//!
//! A session key created here is wrapped to every active (non-revoked) device of the user,
//! this one included (so a reinstall can recover it), each wrap signed with this device's
//! Ed25519 identity, and uploaded with `put_key_wraps` before any message sealed with it is
//! uploaded. Then the key is marked distributed; a crash before that simply distributes it
//! again (wraps are upserted on `(session, epoch, recipient)`).
//!
//! # Revocation
//!
//! [`Devices::revoke`] marks the device revoked in the cloud, then rotates every session this
//! device created a key for to a new epoch wrapped only to the devices that remain. The
//! consumer seals new messages with the newest epoch, so the revoked device (which keeps the
//! old keys it already had) cannot open anything sealed afterwards.
//!
//! # Receiving
//!
//! [`Devices::receive_keys`] fetches the wraps addressed to this device, verifies each
//! signature against the sender's **registered** Ed25519 key (never a key carried by the
//! wrap), unwraps, and stores the key sealed at rest. Wraps from unknown senders and from
//! revoked senders are rejected: a revoked device must not be able to push a key of its
//! choosing that this device would then seal with. The price is that history wrapped only by
//! a device that was revoked since must be re-shared by a remaining device.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rand_core::OsRng;

use crate::adapters::sqlite::{SqliteColdStore, SqliteOptions};
use crate::adapters::system::SystemClock;
use crate::app::auth::AuthState;
use crate::domain::crypto::{
    distribute_session_key, rotate_session_key, unwrap_session_key, ActiveDevice, CryptoError,
    DevicePublicKeys, DeviceSecretKeys, KeyEpoch, WrapSender,
};
use crate::domain::{DeviceId, SessionId};
use crate::ports::{AccessToken, Clock, CloudDeviceRow, CloudSync, TokenRefresher};

use super::error::{blocking, DevicesError};
use super::keyring::{HeldKey, Keyring};
use super::secrets::DeviceSecrets;

/// What [`Devices::revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeReport {
    /// The revoked device.
    pub revoked: DeviceId,
    /// Each rotated session and its new epoch.
    pub rotated: Vec<(SessionId, KeyEpoch)>,
}

/// Why a received wrap was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrapRejection {
    /// The sender is not a registered device of this user.
    #[error("the sender is not a registered device")]
    UnknownSender,
    /// The sender has been revoked.
    #[error("the sender has been revoked")]
    SenderRevoked,
    /// The wrap belongs to another session than the one asked for.
    #[error("the wrap belongs to another session")]
    WrongSession,
    /// The wrap is malformed, unsigned, forged or not addressed to this device.
    #[error(transparent)]
    Invalid(#[from] CryptoError),
}

/// A wrap that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedWrap {
    /// The epoch it claimed.
    pub epoch: KeyEpoch,
    /// The sender it claimed.
    pub sender: DeviceId,
    /// Why it was refused.
    pub reason: WrapRejection,
}

/// What [`Devices::receive_keys`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedKeys {
    /// Generations verified, unwrapped and stored now.
    pub stored: Vec<KeyEpoch>,
    /// Generations this device already held.
    pub already_held: Vec<KeyEpoch>,
    /// Wraps refused.
    pub rejected: Vec<RejectedWrap>,
}

/// This device's registration and key distribution. See the module docs.
pub struct Devices {
    cloud: Arc<dyn CloudSync>,
    refresher: Arc<dyn TokenRefresher>,
    auth: Arc<AuthState>,
    keyring: Arc<Keyring>,
    identity: Arc<DeviceSecretKeys>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices")
            .field("auth", &self.auth)
            .field("public_keys", &self.identity.public_keys())
            .finish_non_exhaustive()
    }
}

impl Devices {
    /// Assembles the service from its parts.
    pub fn new(
        cloud: Arc<dyn CloudSync>,
        refresher: Arc<dyn TokenRefresher>,
        auth: Arc<AuthState>,
        keyring: Arc<Keyring>,
        identity: DeviceSecretKeys,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            cloud,
            refresher,
            auth,
            keyring,
            identity: Arc::new(identity),
            clock,
        }
    }

    /// Opens the service over the database at `db_path` with the secrets beside it
    /// ([`DeviceSecrets::beside`]), creating them on first use. Blocks (SQLite, files).
    pub fn open(
        cloud: Arc<dyn CloudSync>,
        refresher: Arc<dyn TokenRefresher>,
        auth: Arc<AuthState>,
        db_path: &Path,
    ) -> Result<Self, DevicesError> {
        let store = Arc::new(SqliteColdStore::open(db_path, SqliteOptions::default())?);
        Self::open_with(
            cloud,
            refresher,
            auth,
            store,
            &DeviceSecrets::beside(db_path),
            Arc::new(SystemClock),
        )
    }

    /// Opens the service over an open bookkeeping store with explicit secret files. Blocks.
    pub fn open_with(
        cloud: Arc<dyn CloudSync>,
        refresher: Arc<dyn TokenRefresher>,
        auth: Arc<AuthState>,
        store: Arc<SqliteColdStore>,
        secrets: &DeviceSecrets,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DevicesError> {
        let local_key = secrets.load_local_key()?;
        let identity = secrets.load_identity()?;
        let keyring = Arc::new(Keyring::new(store, local_key, Arc::clone(&clock)));
        Ok(Self::new(cloud, refresher, auth, keyring, identity, clock))
    }

    /// This device's public keys.
    pub fn public_keys(&self) -> DevicePublicKeys {
        self.identity.public_keys()
    }

    /// The keyring.
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// The auth state the service acts under.
    pub fn auth(&self) -> &Arc<AuthState> {
        &self.auth
    }

    /// The cloud it talks to.
    pub fn cloud(&self) -> &Arc<dyn CloudSync> {
        &self.cloud
    }

    /// The token refresher.
    pub fn refresher(&self) -> &Arc<dyn TokenRefresher> {
        &self.refresher
    }

    /// Registers (or refreshes) this device and its public keys in the cloud.
    pub async fn register(
        &self,
        name: &str,
        platform: &str,
    ) -> Result<CloudDeviceRow, DevicesError> {
        let device = self.device_id()?;
        let keys = self.identity.public_keys();
        let row = CloudDeviceRow {
            id: device,
            name: name.to_owned(),
            platform: platform.to_owned(),
            x25519_public_key: keys.x25519_base64(),
            ed25519_public_key: keys.ed25519_base64(),
            last_seen_at_ms: Some(self.clock.now_ms()),
            revoked_at_ms: None,
        };
        let cloud = &self.cloud;
        self.auth
            .call(self.refresher.as_ref(), |token| {
                let row = &row;
                async move { cloud.upsert_device(&token, row).await }
            })
            .await?;
        Ok(row)
    }

    /// Every device of the user, revoked ones included.
    pub async fn roster(&self) -> Result<Vec<CloudDeviceRow>, DevicesError> {
        let cloud = &self.cloud;
        Ok(self
            .auth
            .call(self.refresher.as_ref(), |token| async move {
                cloud.list_devices(&token).await
            })
            .await?)
    }

    /// The user's active devices with their decoded public keys (rows with malformed keys
    /// are skipped and logged).
    pub async fn active_devices(&self) -> Result<Vec<ActiveDevice>, DevicesError> {
        Ok(active(&self.roster().await?))
    }

    /// Wraps `held` to every active device, uploads the wraps and marks the key distributed.
    /// Returns how many wraps were uploaded.
    pub async fn distribute(&self, held: &HeldKey) -> Result<usize, DevicesError> {
        let me = self.device_id()?;
        let devices = self.active_devices().await?;
        let wraps = distribute_session_key(
            &held.key,
            held.session_id,
            held.epoch,
            WrapSender {
                device_id: me,
                keys: &self.identity,
            },
            &devices,
            &mut OsRng,
        )?;
        let rows: Vec<_> = wraps.iter().map(|w| w.to_row()).collect();
        self.put_wraps(&rows).await?;
        let (keyring, session, epoch) = (Arc::clone(&self.keyring), held.session_id, held.epoch);
        blocking(move || keyring.mark_distributed(session, epoch)).await?;
        tracing::debug!(session = %held.session_id, epoch = %held.epoch, wraps = rows.len(), "session key distributed");
        Ok(rows.len())
    }

    /// Distributes every key created here that has not been distributed yet.
    pub async fn distribute_pending(&self) -> Result<usize, DevicesError> {
        let keyring = Arc::clone(&self.keyring);
        let pending = blocking(move || keyring.undistributed()).await?;
        for held in &pending {
            self.distribute(held).await?;
        }
        Ok(pending.len())
    }

    /// Revokes `device` and rotates every session this device created a key for to a new
    /// epoch wrapped only to the remaining devices.
    pub async fn revoke(&self, device: DeviceId) -> Result<RevokeReport, DevicesError> {
        let me = self.device_id()?;
        if device == me {
            return Err(DevicesError::RevokeSelf);
        }
        let now = self.clock.now_ms();
        let cloud = &self.cloud;
        let found = self
            .auth
            .call(self.refresher.as_ref(), |token| async move {
                cloud.revoke_device(&token, device, now).await
            })
            .await?;
        if !found {
            return Err(DevicesError::UnknownDevice(device));
        }
        let remaining = self.active_devices().await?;
        if !remaining.iter().any(|d| d.device_id == me) {
            return Err(DevicesError::NotRegistered(me));
        }
        let keyring = Arc::clone(&self.keyring);
        let owned = blocking(move || keyring.owned_sessions()).await?;
        let mut rotated = Vec::with_capacity(owned.len());
        for current in owned {
            let next = rotate_session_key(
                current.session_id,
                current.epoch,
                WrapSender {
                    device_id: me,
                    keys: &self.identity,
                },
                &remaining,
                device,
                &mut OsRng,
            )?;
            let (keyring, session, epoch, key) = (
                Arc::clone(&self.keyring),
                current.session_id,
                next.epoch,
                next.key.clone(),
            );
            if !blocking(move || keyring.insert_rotated(session, epoch, &key)).await? {
                tracing::warn!(%session, %epoch, "rotation skipped: the epoch is already held");
                continue;
            }
            let rows: Vec<_> = next.wraps.iter().map(|w| w.to_row()).collect();
            self.put_wraps(&rows).await?;
            let keyring = Arc::clone(&self.keyring);
            blocking(move || keyring.mark_distributed(session, epoch)).await?;
            rotated.push((session, epoch));
        }
        tracing::info!(%device, sessions = rotated.len(), "device revoked; session keys rotated");
        Ok(RevokeReport {
            revoked: device,
            rotated,
        })
    }

    /// Fetches the wraps of `session` addressed to this device, verifies and unwraps them,
    /// and stores the keys at rest. Refused wraps are reported, not fatal.
    pub async fn receive_keys(&self, session: SessionId) -> Result<ReceivedKeys, DevicesError> {
        let me = self.device_id()?;
        let cloud = &self.cloud;
        let rows = self
            .auth
            .call(self.refresher.as_ref(), |token| async move {
                cloud.fetch_key_wraps(&token, session, me).await
            })
            .await?;
        let roster: HashMap<DeviceId, CloudDeviceRow> = self
            .roster()
            .await?
            .into_iter()
            .map(|row| (row.id, row))
            .collect();
        let mut out = ReceivedKeys::default();
        for row in rows {
            let reject = |reason| RejectedWrap {
                epoch: row.key_epoch,
                sender: row.sender_device_id,
                reason,
            };
            let opened = match roster.get(&row.sender_device_id) {
                _ if row.session_id != session => Err(WrapRejection::WrongSession),
                None => Err(WrapRejection::UnknownSender),
                Some(sender) if sender.revoked_at_ms.is_some() => Err(WrapRejection::SenderRevoked),
                Some(sender) => self
                    .open_wrap(&row, sender, me)
                    .map_err(WrapRejection::from),
            };
            let key = match opened {
                Ok(key) => key,
                Err(reason) => {
                    tracing::warn!(%session, epoch = %row.key_epoch, sender = %row.sender_device_id, %reason, "key wrap refused");
                    out.rejected.push(reject(reason));
                    continue;
                }
            };
            let (keyring, epoch) = (Arc::clone(&self.keyring), row.key_epoch);
            if blocking(move || keyring.insert_received(session, epoch, &key)).await? {
                out.stored.push(epoch);
            } else {
                out.already_held.push(epoch);
            }
        }
        Ok(out)
    }

    fn open_wrap(
        &self,
        row: &crate::domain::crypto::SessionKeyWrapRow,
        sender: &CloudDeviceRow,
        me: DeviceId,
    ) -> Result<crate::domain::crypto::SessionKey, CryptoError> {
        let sender_keys =
            DevicePublicKeys::from_base64(&sender.x25519_public_key, &sender.ed25519_public_key)?;
        let wrap = row.decode()?;
        unwrap_session_key(&wrap, me, &self.identity, &sender_keys.ed25519)
    }

    async fn put_wraps(
        &self,
        rows: &[crate::domain::crypto::SessionKeyWrapRow],
    ) -> Result<(), DevicesError> {
        if rows.is_empty() {
            return Ok(());
        }
        let cloud = &self.cloud;
        self.auth
            .call(self.refresher.as_ref(), |token: AccessToken| async move {
                cloud.put_key_wraps(&token, rows).await
            })
            .await?;
        Ok(())
    }

    fn device_id(&self) -> Result<DeviceId, DevicesError> {
        self.auth
            .current()
            .map(|c| c.device_id)
            .ok_or(DevicesError::NotAuthenticated)
    }
}

/// The non-revoked devices of a roster whose keys decode.
fn active(roster: &[CloudDeviceRow]) -> Vec<ActiveDevice> {
    roster
        .iter()
        .filter(|row| row.revoked_at_ms.is_none())
        .filter_map(|row| {
            match DevicePublicKeys::from_base64(&row.x25519_public_key, &row.ed25519_public_key) {
                Ok(public_keys) => Some(ActiveDevice {
                    device_id: row.id,
                    public_keys,
                }),
                Err(e) => {
                    tracing::warn!(device = %row.id, error = %e, "device row with malformed keys skipped");
                    None
                }
            }
        })
        .collect()
}
