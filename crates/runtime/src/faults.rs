//! Network partitions, a failing disk and a clock set forward on real processes, for tests of
//! what a cluster does under them (the simulator's partitions, crashes and clock faults, on
//! real nodes).
//!
//! A node told to isolate itself from some peers drops every frame to and from them
//! ([`crate::BlockedPeers`]); its clients still reach it. Cutting every member off from the
//! members outside its own group splits the cluster into those groups, as a switch failing
//! would: [`parse_groups`] reads a split written `1,2/3`, [`cut_offs`] says whom each member
//! drops, and each member is told its part through its own fault endpoint
//! (`POST /faults` with [`Faults`]; `GET /faults` answers an [`Isolation`]). The same body
//! can make the node's next write-ahead log sync fail (`fail_sync`), which stops the node as a
//! failing disk does: it never retries and goes on; and jump its clock ahead
//! (`clock_jump_ms`), which [`Isolation::clock_ahead_ms`] then reports.

use std::collections::{BTreeMap, BTreeSet};

use concord_core::NodeId;
use serde::{Deserialize, Serialize};

/// The body of `POST /faults`: every fault of this node at once (a field left out is off).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Peers whose traffic to and from this node is dropped (empty heals every link).
    #[serde(default)]
    pub isolate: Vec<NodeId>,
    /// The node's next write-ahead log sync fails, and the node stops.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_sync: bool,
    /// Jump the node's clock this many milliseconds ahead (a clock set forward; it never goes
    /// back). Its timers fire early: elections, heartbeats, lease expiry.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub clock_jump_ms: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Faults {
    /// Reads the body of a `POST /faults` to node `me`, checking that it names members only,
    /// never `me`; the error shows the expected shape or names the wrong peer.
    pub fn from_request(
        me: NodeId,
        members: &BTreeSet<NodeId>,
        body: &[u8],
    ) -> Result<Faults, String> {
        let faults: Faults = serde_json::from_slice(body).map_err(|e| {
            format!(
                "expected {{\"isolate\": [node ids], \"fail_sync\": true or false, \
                 \"clock_jump_ms\": milliseconds}}: {e}"
            )
        })?;
        for &peer in &faults.isolate {
            if peer == me {
                return Err(format!("node {me} cannot be isolated from itself"));
            }
            if !members.contains(&peer) {
                return Err(format!("{peer} is not a member (members: {members:?})"));
            }
        }
        Ok(faults)
    }
}

/// The answer of `GET /faults`, and of a `POST` that took: the node, the members it knows,
/// and the peers it drops now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// The node that answers.
    pub id: NodeId,
    /// The members it knows.
    pub members: BTreeSet<NodeId>,
    /// The peers it is cut off from.
    pub isolated: BTreeSet<NodeId>,
    /// How far its clock was jumped ahead in all, in milliseconds.
    #[serde(default)]
    pub clock_ahead_ms: u64,
}

/// Parses a split of `members` into groups, `0,1/2,3,4`: each member in one group at most.
/// Members in no group are cut off alone.
pub fn parse_groups(
    text: &str,
    members: &BTreeSet<NodeId>,
) -> Result<Vec<BTreeSet<NodeId>>, String> {
    let mut seen = BTreeSet::new();
    let mut groups = Vec::new();
    for part in text.split('/') {
        let mut group = BTreeSet::new();
        for id in part.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let id: NodeId = id
                .parse()
                .map_err(|_| format!("--groups: '{id}' is not a node id"))?;
            if !members.contains(&id) {
                return Err(format!(
                    "--groups: node {id} is not a member (members: {members:?})"
                ));
            }
            if !seen.insert(id) {
                return Err(format!("--groups: node {id} is in two groups"));
            }
            group.insert(id);
        }
        if group.is_empty() {
            return Err(format!(
                "--groups: an empty group in '{text}' (expected e.g. 1,2/3,4,5)"
            ));
        }
        groups.push(group);
    }
    Ok(groups)
}

/// For each member, the members it must drop so that only members of one group talk.
pub fn cut_offs(
    members: &BTreeSet<NodeId>,
    groups: &[BTreeSet<NodeId>],
) -> BTreeMap<NodeId, Vec<NodeId>> {
    members
        .iter()
        .map(|&id| {
            let own = groups.iter().find(|g| g.contains(&id));
            let others = members
                .iter()
                .filter(|&&m| m != id && !own.is_some_and(|g| g.contains(&m)))
                .copied()
                .collect();
            (id, others)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn groups_split_the_members_and_the_rest_stand_alone() {
        let all = members(&[1, 2, 3, 4, 5]);
        let groups = parse_groups("1, 2/3,4", &all).unwrap();
        assert_eq!(groups, vec![members(&[1, 2]), members(&[3, 4])]);
        let cuts = cut_offs(&all, &groups);
        assert_eq!(cuts[&1], vec![3, 4, 5]);
        assert_eq!(cuts[&3], vec![1, 2, 5]);
        assert_eq!(cuts[&5], vec![1, 2, 3, 4], "a member in no group is alone");
    }

    #[test]
    fn bad_splits_are_refused_with_the_reason() {
        let all = members(&[1, 2, 3]);
        for (text, reason) in [
            ("1/x", "'x' is not a node id"),
            ("1/7", "node 7 is not a member"),
            ("1,2/2,3", "node 2 is in two groups"),
            ("1//3", "an empty group"),
        ] {
            let error = parse_groups(text, &all).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn a_node_is_cut_off_from_members_only_and_never_from_itself() {
        let all = members(&[1, 2, 3]);
        let request = |body: &str| Faults::from_request(1, &all, body.as_bytes());
        assert_eq!(request(r#"{"isolate":[2,3]}"#).unwrap().isolate, vec![2, 3]);
        assert_eq!(request(r#"{"isolate":[]}"#).unwrap(), Faults::default());
        assert!(request(r#"{"isolate":[1]}"#)
            .unwrap_err()
            .contains("itself"));
        assert!(request(r#"{"isolate":[9]}"#)
            .unwrap_err()
            .contains("not a member"));
        assert!(request(r#"{"cut":[2]}"#)
            .unwrap_err()
            .contains("expected {\"isolate\""));
    }

    #[test]
    fn a_body_names_every_fault_and_one_left_out_is_off() {
        let all = members(&[1, 2, 3]);
        let request = |body: &str| Faults::from_request(1, &all, body.as_bytes());
        let disk = request(r#"{"fail_sync":true}"#).unwrap();
        assert!(disk.fail_sync && disk.isolate.is_empty());
        assert!(!request(r#"{"isolate":[2]}"#).unwrap().fail_sync);
        assert_eq!(request("{}").unwrap(), Faults::default());
        assert_eq!(
            request(r#"{"clock_jump_ms":1500}"#).unwrap().clock_jump_ms,
            1500
        );
        assert!(request(r#"{"clock_jump_ms":-5}"#).is_err());
        assert!(request(r#"{"fail_sync":"yes"}"#)
            .unwrap_err()
            .contains("\"fail_sync\": true or false"));
    }
}
