//! Key distribution and rotation: which devices receive which key generation.
//!
//! A new session's key is distributed to every active device of the user with
//! [`distribute_session_key`]. Revoking a device calls [`rotate_session_key`]: a fresh key for
//! the next [`KeyEpoch`], wrapped to exactly the devices that remain. The revoked device keeps
//! whatever older keys it already held (nothing can take them back), but it never receives
//! the new one, so nothing sealed from the new epoch on is readable to it.
//!
//! Both functions are pure: the app reads the device roster, calls them, and then writes the
//! wraps (and its own locally sealed copy of the key) in whatever order its ports require.

use std::collections::BTreeSet;

use rand_core::CryptoRngCore;

use super::identity::{DevicePublicKeys, DeviceSecretKeys};
use super::key_wrap::{wrap_session_key, SessionKeyWrap, WrapContext};
use super::session_key::{KeyEpoch, SessionKey};
use super::CryptoError;
use crate::domain::ids::{DeviceId, SessionId};

/// A device that should hold the session key: its id and registered public keys.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ActiveDevice {
    /// The device's id.
    pub device_id: DeviceId,
    /// The device's registered public keys.
    pub public_keys: DevicePublicKeys,
}

/// The device performing a distribution: it signs every wrap.
#[derive(Clone, Copy, Debug)]
pub struct WrapSender<'a> {
    /// The sender's id.
    pub device_id: DeviceId,
    /// The sender's secret keys.
    pub keys: &'a DeviceSecretKeys,
}

/// The outcome of a rotation: the new key generation and one wrap per remaining device.
#[derive(Debug)]
pub struct RotatedKey {
    /// The new epoch (the old one plus one).
    pub epoch: KeyEpoch,
    /// The new session key (redacted in `Debug`, zeroized on drop).
    pub key: SessionKey,
    /// One wrap per remaining device, in device-id order.
    pub wraps: Vec<SessionKeyWrap>,
}

/// Wraps `key` (of `epoch`) to every device in `devices`, signed by `sender`.
///
/// Wraps come out in device-id order. A device listed twice is
/// [`CryptoError::InvalidRotation`]; an empty list yields no wraps. The sender may (and
/// usually does) appear in `devices`: a wrap to itself is how its other installations, or
/// itself after losing local state, recover the key.
pub fn distribute_session_key(
    key: &SessionKey,
    session_id: SessionId,
    epoch: KeyEpoch,
    sender: WrapSender<'_>,
    devices: &[ActiveDevice],
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<SessionKeyWrap>, CryptoError> {
    let mut sorted: Vec<&ActiveDevice> = devices.iter().collect();
    sorted.sort_by_key(|device| device.device_id);
    let mut seen = BTreeSet::new();
    let mut wraps = Vec::with_capacity(sorted.len());
    for device in sorted {
        if !seen.insert(device.device_id) {
            return Err(CryptoError::InvalidRotation {
                reason: "a device is listed twice",
            });
        }
        let context = WrapContext {
            session_id,
            key_epoch: epoch,
            sender_device_id: sender.device_id,
            recipient_device_id: device.device_id,
        };
        wraps.push(wrap_session_key(
            key,
            &context,
            sender.keys,
            &device.public_keys,
            rng,
        )?);
    }
    Ok(wraps)
}

/// Rotates a session to the epoch after `current`, excluding `revoked`.
///
/// `active` is the roster of active devices; `revoked` is removed from it here even if the
/// caller already did, so a stale roster cannot leak the new key. Refused with
/// [`CryptoError::InvalidRotation`] when the sender is the revoked device or no device
/// remains, and with [`CryptoError::EpochExhausted`] past `u32::MAX`.
pub fn rotate_session_key(
    session_id: SessionId,
    current: KeyEpoch,
    sender: WrapSender<'_>,
    active: &[ActiveDevice],
    revoked: DeviceId,
    rng: &mut impl CryptoRngCore,
) -> Result<RotatedKey, CryptoError> {
    if sender.device_id == revoked {
        return Err(CryptoError::InvalidRotation {
            reason: "the revoked device cannot perform the rotation",
        });
    }
    let epoch = current.next().ok_or(CryptoError::EpochExhausted)?;
    let remaining: Vec<ActiveDevice> = active
        .iter()
        .filter(|device| device.device_id != revoked)
        .copied()
        .collect();
    if remaining.is_empty() {
        return Err(CryptoError::InvalidRotation {
            reason: "no device remains to receive the new key",
        });
    }
    let key = SessionKey::generate(rng);
    let wraps = distribute_session_key(&key, session_id, epoch, sender, &remaining, rng)?;
    Ok(RotatedKey { epoch, key, wraps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::crypto::envelope::{open_message, seal_message, MessageAad};
    use crate::domain::crypto::key_wrap::unwrap_session_key;
    use crate::domain::crypto::test_support::{assert_redacted, device, message, rng, session};
    use crate::domain::ids::Seq;

    struct Roster {
        keys: Vec<DeviceSecretKeys>,
        active: Vec<ActiveDevice>,
    }

    fn roster(n: u128) -> Roster {
        let mut r = rng(100);
        let keys: Vec<DeviceSecretKeys> =
            (0..n).map(|_| DeviceSecretKeys::generate(&mut r)).collect();
        let active = keys
            .iter()
            .zip(1..)
            .map(|(k, i)| ActiveDevice {
                device_id: device(i),
                public_keys: k.public_keys(),
            })
            .collect();
        Roster { keys, active }
    }

    fn sender(roster: &Roster) -> WrapSender<'_> {
        WrapSender {
            device_id: device(1),
            keys: &roster.keys[0],
        }
    }

    #[test]
    fn distribution_wraps_to_every_device_in_id_order() {
        let roster = roster(3);
        let key = SessionKey::generate(&mut rng(1));
        let mut shuffled = roster.active.clone();
        shuffled.reverse();
        let wraps = distribute_session_key(
            &key,
            session(1),
            KeyEpoch::FIRST,
            sender(&roster),
            &shuffled,
            &mut rng(2),
        )
        .unwrap();
        let recipients: Vec<DeviceId> = wraps.iter().map(|w| w.recipient_device_id).collect();
        assert_eq!(recipients, vec![device(1), device(2), device(3)]);
        for (i, wrap) in wraps.iter().enumerate() {
            let got = unwrap_session_key(
                wrap,
                roster.active[i].device_id,
                &roster.keys[i],
                &roster.keys[0].public_keys().ed25519,
            )
            .unwrap();
            assert_eq!(got.expose_secret(), key.expose_secret());
        }
    }

    #[test]
    fn duplicate_devices_are_refused() {
        let roster = roster(2);
        let mut devices = roster.active.clone();
        devices.push(roster.active[1]);
        let err = distribute_session_key(
            &SessionKey::generate(&mut rng(1)),
            session(1),
            KeyEpoch::FIRST,
            sender(&roster),
            &devices,
            &mut rng(2),
        )
        .unwrap_err();
        assert!(matches!(err, CryptoError::InvalidRotation { .. }));
    }

    #[test]
    fn the_revoked_device_cannot_read_the_new_epoch() {
        let roster = roster(3);
        let revoked = device(3);
        let revoked_keys = &roster.keys[2];
        let sender_ed = roster.keys[0].public_keys().ed25519;

        // Epoch 1 went to all three devices; the soon-revoked one holds it.
        let first = SessionKey::generate(&mut rng(4));
        let first_wraps = distribute_session_key(
            &first,
            session(1),
            KeyEpoch::FIRST,
            sender(&roster),
            &roster.active,
            &mut rng(4),
        )
        .unwrap();
        let old_key =
            unwrap_session_key(&first_wraps[2], revoked, revoked_keys, &sender_ed).unwrap();

        let rotated = rotate_session_key(
            session(1),
            KeyEpoch::FIRST,
            sender(&roster),
            &roster.active,
            revoked,
            &mut rng(5),
        )
        .unwrap();
        assert_eq!(rotated.epoch, KeyEpoch::new(2));
        let recipients: Vec<DeviceId> = rotated
            .wraps
            .iter()
            .map(|w| w.recipient_device_id)
            .collect();
        assert_eq!(recipients, vec![device(1), device(2)]);

        // Remaining devices unwrap the new key.
        for (i, wrap) in rotated.wraps.iter().enumerate() {
            let got = unwrap_session_key(
                wrap,
                device(i as u128 + 1),
                &roster.keys[i],
                &roster.keys[0].public_keys().ed25519,
            )
            .unwrap();
            assert_eq!(got.expose_secret(), rotated.key.expose_secret());
        }

        // The revoked device cannot unwrap any of them, whatever id it claims.
        for wrap in &rotated.wraps {
            for claimed in [revoked, wrap.recipient_device_id] {
                assert!(unwrap_session_key(
                    wrap,
                    claimed,
                    revoked_keys,
                    &roster.keys[0].public_keys().ed25519,
                )
                .is_err());
            }
        }

        // Nor open a message sealed under the new epoch with the epoch-1 key it still holds.
        let aad = MessageAad::new(
            session(1),
            message(1),
            Seq::new(1),
            device(1),
            rotated.epoch,
        );
        let sealed = seal_message(&rotated.key, &aad, b"after revocation", &mut rng(6)).unwrap();
        assert_eq!(
            open_message(&old_key, &aad, &sealed).unwrap_err(),
            CryptoError::Decrypt
        );
        let old_epoch_aad = MessageAad {
            key_epoch: KeyEpoch::FIRST,
            ..aad
        };
        assert_eq!(
            open_message(&old_key, &old_epoch_aad, &sealed).unwrap_err(),
            CryptoError::Decrypt
        );
        assert_eq!(
            open_message(&rotated.key, &aad, &sealed)
                .unwrap()
                .as_slice(),
            b"after revocation"
        );
    }

    #[test]
    fn the_revoked_device_is_excluded_even_when_the_caller_forgot() {
        let roster = roster(2);
        let rotated = rotate_session_key(
            session(1),
            KeyEpoch::new(7),
            sender(&roster),
            &roster.active,
            device(2),
            &mut rng(5),
        )
        .unwrap();
        assert_eq!(rotated.epoch, KeyEpoch::new(8));
        assert_eq!(rotated.wraps.len(), 1);
        assert_eq!(rotated.wraps[0].recipient_device_id, device(1));
        assert!(rotated.wraps.iter().all(|w| w.key_epoch == rotated.epoch));
    }

    #[test]
    fn inconsistent_rotations_are_refused() {
        let roster = roster(2);
        let attempt = |current: KeyEpoch, active: &[ActiveDevice], revoked: DeviceId| {
            rotate_session_key(
                session(1),
                current,
                sender(&roster),
                active,
                revoked,
                &mut rng(5),
            )
            .map(|r| r.epoch)
        };
        assert!(matches!(
            attempt(KeyEpoch::FIRST, &roster.active, device(1)),
            Err(CryptoError::InvalidRotation { .. })
        ));
        assert!(matches!(
            attempt(KeyEpoch::FIRST, &roster.active[1..], device(2)),
            Err(CryptoError::InvalidRotation { .. })
        ));
        assert_eq!(
            attempt(KeyEpoch::new(u32::MAX), &roster.active, device(2)),
            Err(CryptoError::EpochExhausted)
        );
    }

    #[test]
    fn debug_of_a_rotation_redacts_the_key() {
        let roster = roster(2);
        let rotated = rotate_session_key(
            session(1),
            KeyEpoch::FIRST,
            sender(&roster),
            &roster.active,
            device(2),
            &mut rng(5),
        )
        .unwrap();
        let debug = format!("{rotated:?}");
        assert!(debug.contains("SessionKey(<redacted>)"));
        assert_redacted(&debug, rotated.key.expose_secret());
        let debug = format!("{:?}", sender(&roster));
        assert_redacted(&debug, &roster.keys[0].to_storage_bytes()[1..33]);
        assert_redacted(&debug, &roster.keys[0].to_storage_bytes()[33..]);
    }
}
