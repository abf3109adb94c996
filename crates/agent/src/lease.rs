//! Who backs up a volume, and who does the cluster's maintenance: `coordination.k8s.io`
//! Leases in the agent's namespace, with expiry, so a dead agent blocks nothing for longer
//! than a Lease lasts. Taking a Lease is a create or a replace carrying the
//! resourceVersion read, so of two agents that try at once exactly one wins (the other
//! gets 409 Conflict).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

/// The name of the Lease that elects the agent doing forget, prune and check.
pub const MAINTENANCE: &str = "holdfast-maintenance";

/// The Lease name for a volume: a hash of `namespace/pvc` (names may be longer than a
/// Lease name allows); the key itself is in the annotation `holdfast.io/volume`.
pub fn volume_lease_name(key: &str) -> String {
    let h = blake3::hash(key.as_bytes());
    format!("holdfast-vol-{}", &h.to_hex()[..20])
}

/// Cuts an annotation value to 512 bytes (at a character boundary): annotations are
/// for state, not logs.
pub fn truncate_value(v: &mut String) {
    if v.len() > 512 {
        let mut cut = 512;
        while !v.is_char_boundary(cut) {
            cut -= 1;
        }
        v.truncate(cut);
    }
}

/// A Lease this agent holds.
#[derive(Debug, Clone)]
pub struct Held {
    /// The Lease's name.
    pub name: String,
    lease: Lease,
}

impl Held {
    /// The annotations of the held Lease.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.lease.metadata.annotations.clone().unwrap_or_default()
    }

    /// An annotation of the held Lease.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }
}

/// The outcome of trying to take a Lease.
#[derive(Debug)]
pub enum Claim {
    /// Taken (or still ours).
    Acquired(Box<Held>),
    /// Another agent holds it and it has not expired.
    Busy {
        /// Its holder.
        holder: String,
    },
}

/// Takes, renews and releases Leases in one namespace under one identity.
#[derive(Clone)]
pub struct Leases {
    api: Api<Lease>,
    holder: String,
    duration_s: i32,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Whether a Lease is free for `me`: no holder, held by me, or not renewed in time.
fn is_free(lease: &Lease, me: &str, at: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == me {
        return true;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let dur = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed.0 + dur < at
}

/// The outcome of a create or replace that takes a Lease: taken, lost to another writer
/// (409: `None`, read again), or failed.
fn taken(name: &str, written: Result<Lease, kube::Error>) -> Result<Option<Claim>, kube::Error> {
    match written {
        Ok(lease) => Ok(Some(Claim::Acquired(Box::new(Held {
            name: name.to_string(),
            lease,
        })))),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

fn holder_of(lease: &Lease) -> String {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

impl Leases {
    /// Leases in `api`'s namespace, held as `holder` for `duration_s` seconds per renewal.
    pub fn new(api: Api<Lease>, holder: impl Into<String>, duration_s: u32) -> Leases {
        Leases {
            api,
            holder: holder.into(),
            duration_s: duration_s.min(i32::MAX as u32) as i32,
        }
    }

    /// Every Lease of holdfast's in the namespace (label `app.kubernetes.io/name=holdfast`):
    /// one request, for the metrics to read their `holdfast.io/last-*` annotations.
    pub async fn list(&self) -> Result<Vec<Lease>, kube::Error> {
        let lp = kube::api::ListParams::default().labels("app.kubernetes.io/name=holdfast");
        Ok(self.api.list(&lp).await?.items)
    }

    /// This agent's identity in Leases.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Tries to take the Lease `name`, creating it with `annotations` if it does not exist.
    pub async fn try_acquire(
        &self,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Claim, kube::Error> {
        // Two rounds: a lost create or replace race is answered by reading the winner.
        for _ in 0..2 {
            match self.api.get_opt(name).await? {
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.to_string()),
                            annotations: Some(annotations.clone()),
                            labels: Some(BTreeMap::from([(
                                "app.kubernetes.io/name".to_string(),
                                "holdfast".to_string(),
                            )])),
                            ..Default::default()
                        },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(self.holder.clone()),
                            lease_duration_seconds: Some(self.duration_s),
                            acquire_time: Some(now()),
                            renew_time: Some(now()),
                            lease_transitions: Some(0),
                            ..Default::default()
                        }),
                    };
                    let written = self.api.create(&PostParams::default(), &lease).await;
                    if let Some(claim) = taken(name, written)? {
                        return Ok(claim);
                    }
                }
                Some(mut lease) => {
                    if !is_free(&lease, &self.holder, Timestamp::now()) {
                        return Ok(Claim::Busy {
                            holder: holder_of(&lease),
                        });
                    }
                    let spec = lease.spec.get_or_insert_with(Default::default);
                    let taken_over = spec.holder_identity.as_deref() != Some(&self.holder);
                    if taken_over {
                        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                        spec.acquire_time = Some(now());
                    }
                    spec.holder_identity = Some(self.holder.clone());
                    spec.lease_duration_seconds = Some(self.duration_s);
                    spec.renew_time = Some(now());
                    let anns = lease
                        .metadata
                        .annotations
                        .get_or_insert_with(Default::default);
                    for (k, v) in annotations {
                        anns.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                    let written = self.api.replace(name, &PostParams::default(), &lease).await;
                    if let Some(claim) = taken(name, written)? {
                        return Ok(claim);
                    }
                }
            }
        }
        let holder = self
            .api
            .get_opt(name)
            .await?
            .map(|l| holder_of(&l))
            .unwrap_or_default();
        Ok(Claim::Busy { holder })
    }

    /// Renews a held Lease; `Ok(false)` when it was lost (taken over after expiring).
    pub async fn renew(&self, held: &mut Held) -> Result<bool, kube::Error> {
        let mut lease = held.lease.clone();
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(now());
        }
        match self
            .api
            .replace(&held.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                held.lease = l;
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                // Changed since we wrote it: still ours if nobody else took it.
                match self.api.get_opt(&held.name).await? {
                    Some(l) if holder_of(&l) == self.holder => {
                        held.lease = l;
                        Box::pin(self.renew(held)).await
                    }
                    _ => Ok(false),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Renews `held` in a task every third of the Lease's duration until the task is
    /// aborted, while a job runs under it; losing the Lease (taken over after expiring) is
    /// logged and ends the renewals, not the job (a second copy costs time, not data).
    pub fn keep_renewed(&self, held: &Held, what: &'static str) -> tokio::task::JoinHandle<()> {
        let (leases, mut h) = (self.clone(), held.clone());
        let period = std::time::Duration::from_secs(u64::from(self.duration_s.max(3) as u32) / 3);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match leases.renew(&mut h).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(lease = %h.name, "lost the {what}'s Lease while it runs");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(lease = %h.name, error = %e, "cannot renew the {what}'s Lease")
                    }
                }
            }
        })
    }

    /// Sets an annotation on a held Lease (state that must survive the agent, like the
    /// time of the last check).
    pub async fn annotate(
        &self,
        held: &mut Held,
        key: &str,
        value: &str,
    ) -> Result<(), kube::Error> {
        let mut lease = held.lease.clone();
        lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(key.to_string(), value.to_string());
        held.lease = self
            .api
            .replace(&held.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }

    /// Sets several annotations on a held Lease in one write.
    pub async fn annotate_all(
        &self,
        held: &mut Held,
        values: &[(String, String)],
    ) -> Result<(), kube::Error> {
        let mut lease = held.lease.clone();
        let anns = lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        for (k, v) in values {
            anns.insert(k.clone(), v.clone());
        }
        held.lease = self
            .api
            .replace(&held.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }

    /// Records the outcome of a backup attempt that started at `attempt` on its held
    /// Lease ([`crate::commands::LAST_ATTEMPT`], [`crate::commands::LAST_STATUS`], and
    /// [`crate::commands::LAST_SUCCESS`] when it succeeded): the metrics read them back
    /// after a restart, since a failure leaves nothing in the repository. The Lease is
    /// read fresh first (a renewer may have advanced it); a failure is logged.
    pub async fn record_outcome(
        &self,
        held: &mut Held,
        attempt: chrono::DateTime<chrono::Utc>,
        failure: Option<&str>,
    ) {
        use crate::commands::{LAST_ATTEMPT, LAST_STATUS, LAST_SUCCESS};
        let _ = self.renew(held).await;
        let stamp = attempt.to_rfc3339();
        let mut values = vec![(LAST_ATTEMPT.to_string(), stamp.clone())];
        match failure {
            None => {
                values.push((LAST_STATUS.to_string(), "succeeded".into()));
                values.push((LAST_SUCCESS.to_string(), stamp));
            }
            Some(why) => {
                let mut v = format!("failed: {}", why.lines().next().unwrap_or(""));
                truncate_value(&mut v);
                values.push((LAST_STATUS.to_string(), v));
            }
        }
        if let Err(e) = self.annotate_all(held, &values).await {
            tracing::warn!(lease = %held.name, error = %e, "cannot record the outcome on the Lease (metrics show it until the agent restarts)");
        }
    }

    /// Gives a held Lease up so another agent can take it at once (read fresh, since a
    /// renewer may have advanced it; left alone if someone else holds it now). Failure is
    /// logged, not returned: the Lease then simply expires.
    pub async fn release(&self, held: Held) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&held.name).await? else {
                return Ok(());
            };
            if holder_of(&lease) != self.holder {
                return Ok(());
            }
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
                spec.renew_time = Some(now());
            }
            self.api
                .replace(&held.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(lease = %held.name, error = %e, "cannot release the Lease; it expires on its own");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_s_ago: i64, dur: i32) -> Lease {
        Lease {
            metadata: Default::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                lease_duration_seconds: Some(dur),
                renew_time: Some(MicroTime(
                    Timestamp::now() - SignedDuration::from_secs(renewed_s_ago),
                )),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_free_when_unheld_ours_or_expired() {
        let now = Timestamp::now();
        assert!(is_free(&lease(None, 0, 60), "me", now));
        assert!(is_free(&lease(Some(""), 0, 60), "me", now));
        assert!(is_free(&lease(Some("me"), 0, 60), "me", now));
        assert!(!is_free(&lease(Some("other"), 10, 60), "me", now));
        assert!(is_free(&lease(Some("other"), 61, 60), "me", now));
    }

    #[test]
    fn lease_names_are_valid_and_distinct() {
        let a = volume_lease_name("app/data");
        let b = volume_lease_name("app/data2");
        assert_ne!(a, b);
        assert!(a.len() < 64);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }
}
