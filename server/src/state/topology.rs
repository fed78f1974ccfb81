//! Topology of the managed system — nodes and groups — and the role
//! elections inside groups.
//!
//! Every operation here first checks everything that can make it fail and
//! only then changes anything, so a rejected operation changes nothing
//! (there is no rollback). Changes are reported as events on the entry's
//! [`Effects`]; lease attachments are kept in step through the [`Leases`]
//! passed in.
//!
//! Elections run ([`Topology::fill`]) at the end of every operation that
//! could free a slot or make a waiting candidate eligible, within the same
//! entry: a release and the grant that reuses its slot always share a
//! revision (DESIGN rule 8).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::command::{
    CampaignOp, CampaignOutcome, Failover, Fence, GroupCreateOp, GroupDeleteOp, GroupMember, GroupUpdateOp,
    NodeDeregisterOp, NodeRegisterOp, PromoteOp, Rejection, ReportProgressOp, ResignOp, RoleSpec, SwitchoverOp,
};
use super::events::{Event, ReleaseReason};
use super::lease::{CampaignKey, Leases};
use super::role::{next_token, Candidate, Members, Role};
use super::Effects;
use crate::limits;

/// A registered node of the managed system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Node {
    address: String,
    zone: String,
    labels: BTreeMap<String, String>,
    /// 0: none (or its lease ended).
    lease: i64,
    /// False only once the node's lease ended; registering again revives it.
    alive: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Group {
    roles: BTreeMap<String, Role>,
    members: Members,
}

/// Nodes, groups, and the highest fencing token issued.
///
/// Serialized as `(nodes, groups, last_token)`; the deadline index and the
/// candidate count are derived again when decoding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Topology {
    nodes: BTreeMap<String, Node>,
    groups: BTreeMap<String, Group>,
    /// Highest fencing token issued by any role. Kept across roles (rather
    /// than per role) so that a group deleted and created again under the
    /// same name never reissues a token its old holders had: tokens only
    /// grow, cluster-wide.
    last_token: u64,
    /// `(time, group, role)`: when an automatic role's held-back slot opens.
    deadlines: BTreeSet<(u64, String, String)>,
    /// The entry of each role in `deadlines`.
    deadline_of: BTreeMap<(String, String), u64>,
    /// Candidates (holding or waiting) over all roles.
    candidates: usize,
}

// ---- views (what queries return) ----

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub address: String,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
    /// 0 when none, or after the node's lease ended.
    pub lease: i64,
    /// Registered without a lease, or with a lease that lives.
    pub alive: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    pub candidate: String,
    pub lease: i64,
    pub token: u64,
    /// Revision of the entry that made the grant.
    pub granted_revision: u64,
    /// Effective priority (a member's configured priority wins).
    pub priority: u32,
    pub progress: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaiterInfo {
    pub candidate: String,
    pub lease: i64,
    /// Effective priority; 0 = never elected.
    pub priority: u32,
    pub progress: u64,
    /// Revision at which it joined the queue.
    pub arrival_revision: u64,
    /// 1-based position in the queue (priority, then arrival).
    pub position: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleView {
    pub spec: RoleSpec,
    /// Oldest grant first.
    pub holders: Vec<HolderInfo>,
    /// Queue order.
    pub waiting: Vec<WaiterInfo>,
    /// Slots held back from automatic election: each the leader time (ms)
    /// until which it stays empty, 0 for none. For an automatic role these
    /// are handover delays; for a manual role, slots awaiting `Promote`.
    pub vacancies: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    pub members: Vec<GroupMember>,
    pub roles: Vec<RoleView>,
}

/// One consistent view of the topology, at `revision`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyView {
    pub revision: u64,
    pub nodes: Vec<NodeInfo>,
    pub groups: Vec<GroupView>,
}

fn not_found_group(group: &str) -> Rejection {
    Rejection::NotFound(format!("group {group:?}"))
}

fn not_found_role(group: &str, role: &str) -> Rejection {
    Rejection::NotFound(format!("role {role:?} of group {group:?}"))
}

fn members_map(members: &[GroupMember]) -> Members {
    members.iter().map(|m| (m.node.clone(), m.priorities.clone())).collect()
}

fn key(group: &str, role: &str, candidate: &str) -> CampaignKey {
    (group.to_owned(), role.to_owned(), candidate.to_owned())
}

impl Topology {
    // ---- elections and time ----

    /// Grants the free slots of one role to the candidates the election rule
    /// picks, each with a fresh token.
    fn fill(&mut self, group: &str, role: &str, fx: &mut Effects) {
        let Some(Group { roles, members }) = self.groups.get_mut(group) else {
            return;
        };
        let Some(r) = roles.get_mut(role) else {
            return;
        };
        while r.free_slots() > 0 {
            let Some(name) = r.pick(members) else {
                break;
            };
            // Tokens cannot realistically reach u64::MAX; if they did, no
            // further grant could be fenced correctly, so none is made.
            let Some(token) = next_token(self.last_token, fx.at) else {
                break;
            };
            if !grant_recorded(r, &mut self.last_token, fx, group, role, &name, token) {
                break;
            }
        }
    }

    /// [`Topology::fill`] for every role of a group.
    fn fill_group(&mut self, group: &str, fx: &mut Effects) {
        let names: Vec<String> = self
            .groups
            .get(group)
            .map(|g| g.roles.keys().cloned().collect())
            .unwrap_or_default();
        for role in names {
            self.fill(group, &role, fx);
        }
    }

    /// Runs the elections of the given roles (after leases ended).
    pub(super) fn fill_roles(&mut self, roles: &BTreeSet<(String, String)>, fx: &mut Effects) {
        for (group, role) in roles {
            self.fill(group, role, fx);
        }
    }

    /// Keeps the deadline index in step with one role's vacancies.
    fn sync_deadline(&mut self, group: &str, role: &str) {
        let k = (group.to_owned(), role.to_owned());
        if let Some(old) = self.deadline_of.remove(&k) {
            self.deadlines.remove(&(old, k.0.clone(), k.1.clone()));
        }
        let next = self
            .groups
            .get(group)
            .and_then(|g| g.roles.get(role))
            .and_then(Role::next_deadline);
        if let Some(t) = next {
            self.deadlines.insert((t, k.0.clone(), k.1.clone()));
            self.deadline_of.insert(k, t);
        }
    }

    /// Opens the slots whose handover delay is over at `fx.stamp_ms` and
    /// elects into them. Runs at the start of every entry.
    pub(super) fn advance_time(&mut self, fx: &mut Effects) {
        while let Some((until, group, role)) = self.deadlines.first().cloned() {
            if until > fx.stamp_ms {
                break;
            }
            if let Some(r) = self.groups.get_mut(&group).and_then(|g| g.roles.get_mut(&role)) {
                r.expire_vacancies(fx.stamp_ms);
            }
            // Replaces this entry with one later than the stamp, or none:
            // the loop always moves on.
            self.sync_deadline(&group, &role);
            self.fill(&group, &role, fx);
        }
    }

    /// When the next held-back slot opens (leader time, ms), if any.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(t, _, _)| *t)
    }

    /// Checks a fence: `token` must be the token of a current grant.
    pub(super) fn check_fence(&self, fence: &Fence) -> Result<(), Rejection> {
        if crate::planted::active(crate::planted::Planted::UncheckedFence) {
            return Ok(());
        }
        let Some(role) = self.groups.get(&fence.group).and_then(|g| g.roles.get(&fence.role)) else {
            return Err(Rejection::Fenced(format!(
                "fence token {} for role {:?} of group {:?}: no such role",
                fence.token, fence.role, fence.group
            )));
        };
        if role.holders.values().any(|h| h.token == fence.token) {
            return Ok(());
        }
        let mut current: Vec<u64> = role.holders.values().map(|h| h.token).collect();
        current.sort_unstable();
        Err(Rejection::Fenced(format!(
            "token {} is not a current grant of role {:?} of group {:?}; current holders' tokens: {current:?}",
            fence.token, fence.role, fence.group
        )))
    }

    // ---- lease end ----

    /// Ends a candidacy whose lease ended (the lease is gone already). A
    /// holder's slot may be held back (handover delay after an expiry, or a
    /// manual role). The caller runs the election afterwards.
    pub(super) fn end_candidacy(&mut self, campaign: &CampaignKey, expired: bool, fx: &mut Effects) {
        let (group, role, candidate) = campaign;
        let Some(r) = self.groups.get_mut(group).and_then(|g| g.roles.get_mut(role)) else {
            return;
        };
        if let Some(holder) = r.release(candidate, expired, fx.stamp_ms) {
            fx.events.push(Event::Released {
                group: group.clone(),
                role: role.clone(),
                candidate: candidate.clone(),
                token: holder.token,
                reason: ReleaseReason::LeaseEnded,
            });
        } else if r.waiting.remove(candidate).is_some() {
            fx.events.push(Event::Withdrawn {
                group: group.clone(),
                role: role.clone(),
                candidate: candidate.clone(),
                reason: ReleaseReason::LeaseEnded,
            });
        } else {
            return;
        }
        self.candidates = self.candidates.saturating_sub(1);
        self.sync_deadline(group, role);
    }

    /// A node's lease ended: it stays registered, not alive.
    pub(super) fn node_lease_ended(&mut self, id: &str, lease: i64, fx: &mut Effects) {
        if let Some(node) = self.nodes.get_mut(id) {
            if node.lease == lease {
                node.lease = 0;
                node.alive = false;
                fx.events.push(Event::NodeChanged { id: id.to_owned() });
            }
        }
    }

    // ---- nodes ----

    pub(super) fn node_register(
        &mut self,
        op: &NodeRegisterOp,
        leases: &mut Leases,
        fx: &mut Effects,
    ) -> Result<(), Rejection> {
        if op.lease != 0 && !leases.contains(op.lease) {
            return Err(Rejection::NotFound(format!("lease {}", op.lease)));
        }
        let existing = self.nodes.get(&op.id);
        if existing.is_none() && self.nodes.len() >= limits::MAX_NODES {
            return Err(Rejection::LimitExceeded(format!(
                "{} nodes are registered; the limit is {}",
                self.nodes.len(),
                limits::MAX_NODES
            )));
        }
        let node = Node {
            address: op.address.clone(),
            zone: op.zone.clone(),
            labels: op.labels.clone(),
            lease: op.lease,
            alive: true,
        };
        let old_lease = existing.map_or(0, |n| n.lease);
        if existing == Some(&node) {
            return Ok(());
        }
        if old_lease != 0 && old_lease != op.lease {
            leases.detach_node(old_lease, &op.id);
        }
        if op.lease != 0 {
            leases.attach_node(op.lease, &op.id);
        }
        self.nodes.insert(op.id.clone(), node);
        fx.events.push(Event::NodeChanged { id: op.id.clone() });
        Ok(())
    }

    pub(super) fn node_deregister(
        &mut self,
        op: &NodeDeregisterOp,
        leases: &mut Leases,
        fx: &mut Effects,
    ) -> Result<(), Rejection> {
        let Some(node) = self.nodes.remove(&op.id) else {
            return Err(Rejection::NotFound(format!("node {:?}", op.id)));
        };
        if node.lease != 0 {
            leases.detach_node(node.lease, &op.id);
        }
        fx.events.push(Event::NodeChanged { id: op.id.clone() });
        Ok(())
    }

    // ---- groups ----

    pub(super) fn group_create(&mut self, op: &GroupCreateOp, fx: &mut Effects) -> Result<(), Rejection> {
        if self.groups.contains_key(&op.name) {
            return Err(Rejection::AlreadyExists(format!("group {:?}", op.name)));
        }
        self.insert_group(&op.name, &op.roles, &op.members, fx)
    }

    fn insert_group(
        &mut self,
        name: &str,
        roles: &[RoleSpec],
        members: &[GroupMember],
        fx: &mut Effects,
    ) -> Result<(), Rejection> {
        if self.groups.len() >= limits::MAX_GROUPS {
            return Err(Rejection::LimitExceeded(format!(
                "{} groups exist; the limit is {}",
                self.groups.len(),
                limits::MAX_GROUPS
            )));
        }
        let group = Group {
            roles: roles.iter().map(|s| (s.name.clone(), Role::new(s.clone()))).collect(),
            members: members_map(members),
        };
        self.groups.insert(name.to_owned(), group);
        fx.events.push(Event::GroupChanged { name: name.to_owned() });
        Ok(())
    }

    pub(super) fn group_update(
        &mut self,
        op: &GroupUpdateOp,
        leases: &mut Leases,
        fx: &mut Effects,
    ) -> Result<(), Rejection> {
        let Some(group) = self.groups.get(&op.name) else {
            return self.insert_group(&op.name, &op.roles, &op.members, fx);
        };
        let specs: BTreeMap<&str, &RoleSpec> = op.roles.iter().map(|s| (s.name.as_str(), s)).collect();
        let members = members_map(&op.members);
        if !op.force {
            for (name, role) in &group.roles {
                let holders = role.holders.len();
                match specs.get(name.as_str()) {
                    None if holders > 0 => {
                        return Err(Rejection::FailedPrecondition(format!(
                            "role {name:?} of group {:?} has {holders} holder(s); dropping it needs force",
                            op.name
                        )))
                    }
                    Some(spec) if (spec.capacity as usize) < holders => {
                        return Err(Rejection::FailedPrecondition(format!(
                            "role {name:?} of group {:?} has {holders} holder(s); lowering its capacity to {} needs force",
                            op.name, spec.capacity
                        )))
                    }
                    _ => {}
                }
            }
        }
        let unchanged = group.members == members
            && group.roles.len() == specs.len()
            && group
                .roles
                .iter()
                .all(|(name, role)| specs.get(name.as_str()) == Some(&&role.spec));
        if unchanged {
            return Ok(());
        }

        // Checked; from here on nothing fails.
        let (at, stamp_ms) = (fx.at, fx.stamp_ms);
        fx.events.push(Event::GroupChanged { name: op.name.clone() });
        let Some(group) = self.groups.get_mut(&op.name) else {
            return Ok(());
        };
        let mut touched: Vec<String> = group.roles.keys().cloned().collect();
        let dropped: Vec<String> = group
            .roles
            .keys()
            .filter(|name| !specs.contains_key(name.as_str()))
            .cloned()
            .collect();
        let mut ended = 0usize;
        for name in &dropped {
            if let Some(role) = group.roles.remove(name) {
                ended += role.candidate_count();
                end_all(&op.name, name, role, leases, fx);
            }
        }
        for (name, spec) in &specs {
            let Some(role) = group.roles.get_mut(*name) else {
                group.roles.insert((*name).to_owned(), Role::new((*spec).clone()));
                touched.push((*name).to_owned());
                continue;
            };
            let was_manual = role.spec.failover == Failover::Manual;
            role.spec = (*spec).clone();
            let excess = role.holders.len().saturating_sub(spec.capacity as usize);
            for candidate in role.newest_holders(excess) {
                if let Some(holder) = role.remove_holder(&candidate) {
                    fx.events.push(Event::Released {
                        group: op.name.clone(),
                        role: (*name).to_owned(),
                        candidate: candidate.clone(),
                        token: holder.token,
                        reason: ReleaseReason::GroupChanged,
                    });
                    role.requeue(&candidate, holder, at);
                }
            }
            role.trim_vacancies();
            if was_manual && spec.failover == Failover::Automatic {
                // Slots awaiting promotion are free now; those still in a
                // handover delay stay held until it ends (then indexed).
                role.expire_vacancies(stamp_ms);
            }
        }
        group.members = members;
        self.candidates = self.candidates.saturating_sub(ended);
        for role in &touched {
            self.sync_deadline(&op.name, role);
        }
        self.fill_group(&op.name, fx);
        Ok(())
    }

    pub(super) fn group_delete(
        &mut self,
        op: &GroupDeleteOp,
        leases: &mut Leases,
        fx: &mut Effects,
    ) -> Result<(), Rejection> {
        let Some(group) = self.groups.remove(&op.name) else {
            return Err(not_found_group(&op.name));
        };
        fx.events.push(Event::GroupChanged { name: op.name.clone() });
        for (name, role) in group.roles {
            self.candidates = self.candidates.saturating_sub(role.candidate_count());
            end_all(&op.name, &name, role, leases, fx);
            self.sync_deadline(&op.name, &name);
        }
        Ok(())
    }

    // ---- elections ----

    pub(super) fn campaign(
        &mut self,
        op: &CampaignOp,
        leases: &mut Leases,
        fx: &mut Effects,
    ) -> Result<CampaignOutcome, Rejection> {
        let group = self
            .groups
            .get_mut(&op.group)
            .ok_or_else(|| not_found_group(&op.group))?;
        let role = group
            .roles
            .get_mut(&op.role)
            .ok_or_else(|| not_found_role(&op.group, &op.role))?;
        if !leases.contains(op.lease) {
            return Err(Rejection::NotFound(format!("lease {}", op.lease)));
        }
        let campaign = key(&op.group, &op.role, &op.candidate);
        let changed_event = || Event::Campaigned {
            group: op.group.clone(),
            role: op.role.clone(),
            candidate: op.candidate.clone(),
        };

        // Campaigning again updates the candidacy in place: a holder keeps
        // its grant and token, a waiting candidate its arrival.
        let recampaign = |c: &mut Candidate, leases: &mut Leases, fx: &mut Effects| {
            let old_lease = c.lease;
            let changed = c.lease != op.lease || c.priority != op.priority;
            c.lease = op.lease;
            c.priority = op.priority;
            c.progress = op.progress;
            if old_lease != op.lease {
                leases.detach_campaign(old_lease, &campaign);
                leases.attach_campaign(op.lease, campaign.clone());
            }
            if changed {
                fx.events.push(changed_event());
            }
        };
        if let Some(holder) = role.holders.get_mut(&op.candidate) {
            recampaign(&mut holder.candidate, leases, fx);
            return Ok(CampaignOutcome::Holding { token: holder.token });
        }

        if let Some(c) = role.waiting.get_mut(&op.candidate) {
            recampaign(c, leases, fx);
        } else {
            if role.candidate_count() >= limits::MAX_CANDIDATES_PER_ROLE {
                return Err(Rejection::LimitExceeded(format!(
                    "role {:?} of group {:?} has {} candidates; the limit is {}",
                    op.role,
                    op.group,
                    role.candidate_count(),
                    limits::MAX_CANDIDATES_PER_ROLE
                )));
            }
            if self.candidates >= limits::MAX_CANDIDATES {
                return Err(Rejection::LimitExceeded(format!(
                    "{} candidates over all roles; the limit is {}",
                    self.candidates,
                    limits::MAX_CANDIDATES
                )));
            }
            role.waiting.insert(
                op.candidate.clone(),
                Candidate {
                    lease: op.lease,
                    priority: op.priority,
                    progress: op.progress,
                    arrival: fx.at,
                },
            );
            leases.attach_campaign(op.lease, campaign);
            self.candidates += 1;
            fx.events.push(changed_event());
        }

        self.fill(&op.group, &op.role, fx);
        Ok(self.outcome(&op.group, &op.role, &op.candidate))
    }

    /// Where a candidate that was waiting before this entry stands now:
    /// holding means the grant was made by this entry.
    fn outcome(&self, group: &str, role: &str, candidate: &str) -> CampaignOutcome {
        let found = self.groups.get(group).and_then(|g| g.roles.get(role).map(|r| (g, r)));
        debug_assert!(found.is_some(), "the role of a campaign vanished within the entry");
        let Some((g, r)) = found else {
            return CampaignOutcome::Queued { position: 0 };
        };
        if let Some(holder) = r.holders.get(candidate) {
            return CampaignOutcome::Elected { token: holder.token };
        }
        let position = r.position(&g.members, candidate);
        debug_assert!(position.is_some(), "a campaigning candidate vanished within the entry");
        CampaignOutcome::Queued {
            position: position.unwrap_or(0),
        }
    }

    /// Gives up a grant (→ `true`) or leaves the queue (→ `false`).
    pub(super) fn resign(&mut self, op: &ResignOp, leases: &mut Leases, fx: &mut Effects) -> Result<bool, Rejection> {
        let role = self
            .groups
            .get_mut(&op.group)
            .ok_or_else(|| not_found_group(&op.group))?
            .roles
            .get_mut(&op.role)
            .ok_or_else(|| not_found_role(&op.group, &op.role))?;
        let campaign = key(&op.group, &op.role, &op.candidate);
        let released = if let Some(holder) = role.release(&op.candidate, false, fx.stamp_ms) {
            leases.detach_campaign(holder.candidate.lease, &campaign);
            fx.events.push(Event::Released {
                group: op.group.clone(),
                role: op.role.clone(),
                candidate: op.candidate.clone(),
                token: holder.token,
                reason: ReleaseReason::Resigned,
            });
            true
        } else if let Some(c) = role.waiting.remove(&op.candidate) {
            leases.detach_campaign(c.lease, &campaign);
            fx.events.push(Event::Withdrawn {
                group: op.group.clone(),
                role: op.role.clone(),
                candidate: op.candidate.clone(),
                reason: ReleaseReason::Resigned,
            });
            false
        } else {
            return Err(Rejection::NotFound(format!(
                "candidate {:?} of role {:?} of group {:?}",
                op.candidate, op.role, op.group
            )));
        };
        self.candidates = self.candidates.saturating_sub(1);
        self.sync_deadline(&op.group, &op.role);
        self.fill(&op.group, &op.role, fx);
        Ok(released)
    }

    pub(super) fn report_progress(&mut self, op: &ReportProgressOp, fx: &mut Effects) -> Result<(), Rejection> {
        let role = self
            .groups
            .get_mut(&op.group)
            .ok_or_else(|| not_found_group(&op.group))?
            .roles
            .get_mut(&op.role)
            .ok_or_else(|| not_found_role(&op.group, &op.role))?;
        if let Some(holder) = role.holders.get_mut(&op.candidate) {
            holder.candidate.progress = op.progress;
        } else if let Some(c) = role.waiting.get_mut(&op.candidate) {
            c.progress = op.progress;
        } else {
            return Err(Rejection::NotFound(format!(
                "candidate {:?} of role {:?} of group {:?}",
                op.candidate, op.role, op.group
            )));
        }
        // Progress changes who is elected, never whether: the most advanced
        // eligible candidate always passes the lag filter. Running the
        // election anyway keeps that an invariant, not an assumption.
        self.fill(&op.group, &op.role, fx);
        Ok(())
    }

    /// Checks that `candidate` waits with a priority above 0.
    fn check_promotable(g: &Group, role: &Role, group: &str, candidate: &str) -> Result<(), Rejection> {
        if role.holders.contains_key(candidate) {
            return Err(Rejection::FailedPrecondition(format!(
                "{candidate:?} already holds role {:?} of group {group:?}",
                role.name()
            )));
        }
        if !role.waiting.contains_key(candidate) {
            return Err(Rejection::FailedPrecondition(format!(
                "{candidate:?} is not waiting for role {:?} of group {group:?}",
                role.name()
            )));
        }
        if !role.is_eligible(&g.members, candidate) {
            return Err(Rejection::FailedPrecondition(format!(
                "{candidate:?} has priority 0 for role {:?} of group {group:?}: never eligible",
                role.name()
            )));
        }
        Ok(())
    }

    /// Moves a grant from a holder to a waiting candidate in one entry: the
    /// holder is released back to the queue and `to` granted at the same
    /// revision, so there is neither a gap nor an overlap. Returns the
    /// released holder and the new token.
    pub(super) fn switchover(&mut self, op: &SwitchoverOp, fx: &mut Effects) -> Result<(String, u64), Rejection> {
        let g = self.groups.get(&op.group).ok_or_else(|| not_found_group(&op.group))?;
        let role = g
            .roles
            .get(&op.role)
            .ok_or_else(|| not_found_role(&op.group, &op.role))?;
        Self::check_promotable(g, role, &op.group, &op.to)?;
        let from = match &op.from {
            Some(from) if role.holders.contains_key(from) => from.clone(),
            Some(from) => {
                return Err(Rejection::FailedPrecondition(format!(
                    "{from:?} does not hold role {:?} of group {:?}",
                    op.role, op.group
                )))
            }
            None => role.oldest_holder().ok_or_else(|| {
                Rejection::FailedPrecondition(format!(
                    "role {:?} of group {:?} has no holder to switch over from",
                    op.role, op.group
                ))
            })?,
        };
        let token = next_token(self.last_token, fx.at)
            .ok_or_else(|| Rejection::Invalid("fencing tokens are exhausted".into()))?;

        let Some(role) = self.groups.get_mut(&op.group).and_then(|g| g.roles.get_mut(&op.role)) else {
            return Err(not_found_role(&op.group, &op.role));
        };
        if let Some(holder) = role.remove_holder(&from) {
            fx.events.push(Event::Released {
                group: op.group.clone(),
                role: op.role.clone(),
                candidate: from.clone(),
                token: holder.token,
                reason: ReleaseReason::Switchover,
            });
            role.requeue(&from, holder, fx.at);
        }
        grant_recorded(role, &mut self.last_token, fx, &op.group, &op.role, &op.to, token);
        Ok((from, token))
    }

    /// Fills a free slot (or a vacancy whose handover delay is over) with a
    /// named waiting candidate: how an operator fails over a manual role.
    /// The lag filter does not apply: the operator chose.
    pub(super) fn promote(&mut self, op: &PromoteOp, fx: &mut Effects) -> Result<u64, Rejection> {
        let g = self.groups.get(&op.group).ok_or_else(|| not_found_group(&op.group))?;
        let role = g
            .roles
            .get(&op.role)
            .ok_or_else(|| not_found_role(&op.group, &op.role))?;
        Self::check_promotable(g, role, &op.group, &op.candidate)?;
        let free = role.free_slots() > 0;
        if !free && !role.vacancies.iter().any(|until| *until <= fx.stamp_ms) {
            return Err(Rejection::FailedPrecondition(match role.vacancies.first() {
                Some(until) => format!(
                    "role {:?} of group {:?} is in its handover delay until {until} ms",
                    op.role, op.group
                ),
                None => format!(
                    "all {} slot(s) of role {:?} of group {:?} are held; use a switchover",
                    role.spec.capacity, op.role, op.group
                ),
            }));
        }
        let token = next_token(self.last_token, fx.at)
            .ok_or_else(|| Rejection::Invalid("fencing tokens are exhausted".into()))?;

        let Some(role) = self.groups.get_mut(&op.group).and_then(|g| g.roles.get_mut(&op.role)) else {
            return Err(not_found_role(&op.group, &op.role));
        };
        if !free {
            role.take_vacancy(fx.stamp_ms);
        }
        grant_recorded(
            role,
            &mut self.last_token,
            fx,
            &op.group,
            &op.role,
            &op.candidate,
            token,
        );
        self.sync_deadline(&op.group, &op.role);
        Ok(token)
    }

    // ---- queries ----

    pub(super) fn node(&self, id: &str) -> Option<NodeInfo> {
        self.nodes.get(id).map(|n| node_info(id, n))
    }

    pub(super) fn group(&self, name: &str) -> Option<GroupView> {
        self.groups.get(name).map(|g| group_view(name, g))
    }

    pub(super) fn role(&self, group: &str, role: &str) -> Option<RoleView> {
        let g = self.groups.get(group)?;
        g.roles.get(role).map(|r| role_view(&g.members, r))
    }

    pub(super) fn view(&self, revision: u64) -> TopologyView {
        TopologyView {
            revision,
            nodes: self.nodes.iter().map(|(id, n)| node_info(id, n)).collect(),
            groups: self.groups.iter().map(|(name, g)| group_view(name, g)).collect(),
        }
    }

    pub(super) fn last_token(&self) -> u64 {
        self.last_token
    }

    /// Every role as `(group, role, view)`, for invariant checks in tests.
    #[cfg(test)]
    pub(super) fn roles(&self) -> Vec<(String, String, RoleView)> {
        let mut out = Vec::new();
        for (gname, g) in &self.groups {
            for (rname, r) in &g.roles {
                out.push((gname.clone(), rname.clone(), role_view(&g.members, r)));
            }
        }
        out
    }

    // ---- invariants ----

    /// Checks what must hold of any topology this code produced, including
    /// its lease attachments both ways and the election invariants: at most
    /// `capacity` holders (with the held-back slots), each holding through a
    /// live lease with a token no greater than the last issued, and no
    /// eligible candidate waiting while a slot is free.
    pub(super) fn check_invariants(&self, revision: u64, leases: &Leases) -> Result<(), String> {
        if self.nodes.len() > limits::MAX_NODES || self.groups.len() > limits::MAX_GROUPS {
            return Err(format!(
                "{} nodes / {} groups, over the limits",
                self.nodes.len(),
                self.groups.len()
            ));
        }
        for (id, node) in &self.nodes {
            if node.lease != 0 {
                if !leases.get(node.lease).is_some_and(|l| l.nodes.contains(id)) {
                    return Err(format!("node {id:?}: lease {} missing or not attached", node.lease));
                }
                if !node.alive {
                    return Err(format!("node {id:?} has lease {} but is not alive", node.lease));
                }
            }
        }
        for (lease_id, lease) in leases.iter() {
            for id in &lease.nodes {
                if self.nodes.get(id).map(|n| n.lease) != Some(*lease_id) {
                    return Err(format!("lease {lease_id} lists node {id:?}, which is not on it"));
                }
            }
            for (group, role, candidate) in &lease.campaigns {
                let r = self.groups.get(group).and_then(|g| g.roles.get(role));
                let on = r.and_then(|r| {
                    r.holders
                        .get(candidate)
                        .map(|h| h.candidate.lease)
                        .or_else(|| r.waiting.get(candidate).map(|c| c.lease))
                });
                if on != Some(*lease_id) {
                    return Err(format!(
                        "lease {lease_id} lists candidate {candidate:?} of {group}/{role}, which is not on it"
                    ));
                }
            }
        }
        let mut candidates = 0usize;
        let mut deadlines = BTreeSet::new();
        for (gname, g) in &self.groups {
            if g.roles.len() > limits::MAX_ROLES_PER_GROUP || g.members.len() > limits::MAX_GROUP_MEMBERS {
                return Err(format!("group {gname:?}: too many roles or members"));
            }
            for (rname, r) in &g.roles {
                let at = format!("role {rname:?} of group {gname:?}");
                check_role(r, rname, &at, revision, self.last_token)?;
                for (name, c) in r.waiting.iter().chain(r.holders.iter().map(|(n, h)| (n, &h.candidate))) {
                    let campaign = key(gname, rname, name);
                    if !leases.get(c.lease).is_some_and(|l| l.campaigns.contains(&campaign)) {
                        return Err(format!("{at}: candidate {name:?} has no live lease {}", c.lease));
                    }
                }
                if r.has_unfilled_slot(&g.members) {
                    return Err(format!("{at}: a slot is free while an eligible candidate waits"));
                }
                candidates += r.candidate_count();
                if let Some(t) = r.next_deadline() {
                    deadlines.insert((t, gname.clone(), rname.clone()));
                }
            }
        }
        if candidates != self.candidates || candidates > limits::MAX_CANDIDATES {
            return Err(format!(
                "{candidates} candidates, counted as {} (limit {})",
                self.candidates,
                limits::MAX_CANDIDATES
            ));
        }
        if deadlines != self.deadlines || self.deadline_of.len() != self.deadlines.len() {
            return Err("role deadline index is out of step".into());
        }
        for (t, g, r) in &self.deadlines {
            if self.deadline_of.get(&(g.clone(), r.clone())) != Some(t) {
                return Err("role deadline index is out of step".into());
            }
        }
        Ok(())
    }
}

/// Releases every holder and withdraws every waiting candidate of a role
/// that is going away (group deleted, role dropped).
fn end_all(group: &str, name: &str, role: Role, leases: &mut Leases, fx: &mut Effects) {
    for (candidate, holder) in role.holders {
        leases.detach_campaign(holder.candidate.lease, &key(group, name, &candidate));
        fx.events.push(Event::Released {
            group: group.to_owned(),
            role: name.to_owned(),
            candidate,
            token: holder.token,
            reason: ReleaseReason::GroupChanged,
        });
    }
    for (candidate, c) in role.waiting {
        leases.detach_campaign(c.lease, &key(group, name, &candidate));
        fx.events.push(Event::Withdrawn {
            group: group.to_owned(),
            role: name.to_owned(),
            candidate,
            reason: ReleaseReason::GroupChanged,
        });
    }
}

fn check_role(r: &Role, name: &str, at: &str, revision: u64, last_token: u64) -> Result<(), String> {
    if r.spec.name != name || r.spec.capacity == 0 || r.spec.capacity > limits::MAX_ROLE_CAPACITY {
        return Err(format!("{at}: spec {:?} does not fit", r.spec));
    }
    if r.holders.len() + r.vacancies.len() > r.spec.capacity as usize {
        return Err(format!(
            "{at}: {} holders and {} held-back slots exceed capacity {}",
            r.holders.len(),
            r.vacancies.len(),
            r.spec.capacity
        ));
    }
    if r.vacancies.windows(2).any(|w| w[0] > w[1]) {
        return Err(format!("{at}: vacancies out of order"));
    }
    if r.candidate_count() > limits::MAX_CANDIDATES_PER_ROLE {
        return Err(format!("{at}: {} candidates", r.candidate_count()));
    }
    let mut tokens = BTreeSet::new();
    for (name, h) in &r.holders {
        if r.waiting.contains_key(name) {
            return Err(format!("{at}: {name:?} both holds and waits"));
        }
        if h.token > last_token || h.token < h.granted_revision || !tokens.insert(h.token) {
            return Err(format!(
                "{at}: {name:?} has token {} (last issued {last_token})",
                h.token
            ));
        }
        if h.granted_revision == 0 || h.granted_revision > revision || h.candidate.arrival > h.granted_revision {
            return Err(format!(
                "{at}: {name:?} granted at revision {} after arriving at {} (store revision {revision})",
                h.granted_revision, h.candidate.arrival
            ));
        }
    }
    for (name, c) in &r.waiting {
        if c.arrival == 0 || c.arrival > revision {
            return Err(format!("{at}: {name:?} arrived at revision {}", c.arrival));
        }
    }
    Ok(())
}

fn node_info(id: &str, n: &Node) -> NodeInfo {
    NodeInfo {
        id: id.to_owned(),
        address: n.address.clone(),
        zone: n.zone.clone(),
        labels: n.labels.clone(),
        lease: n.lease,
        alive: n.alive,
    }
}

fn role_view(members: &Members, r: &Role) -> RoleView {
    let mut holders: Vec<HolderInfo> = r
        .holders
        .iter()
        .map(|(name, h)| HolderInfo {
            candidate: name.clone(),
            lease: h.candidate.lease,
            token: h.token,
            granted_revision: h.granted_revision,
            priority: r.effective(members, name, &h.candidate),
            progress: h.candidate.progress,
        })
        .collect();
    holders.sort_by_key(|h| h.token);
    let waiting = r
        .queue(members)
        .into_iter()
        .enumerate()
        .map(|(i, (name, c, priority))| WaiterInfo {
            candidate: name.clone(),
            lease: c.lease,
            priority,
            progress: c.progress,
            arrival_revision: c.arrival,
            position: u32::try_from(i + 1).unwrap_or(u32::MAX),
        })
        .collect();
    RoleView {
        spec: r.spec.clone(),
        holders,
        waiting,
        vacancies: r.vacancies.clone(),
    }
}

fn group_view(name: &str, g: &Group) -> GroupView {
    GroupView {
        name: name.to_owned(),
        members: g
            .members
            .iter()
            .map(|(node, priorities)| GroupMember {
                node: node.clone(),
                priorities: priorities.clone(),
            })
            .collect(),
        roles: g.roles.values().map(|r| role_view(&g.members, r)).collect(),
    }
}

impl Serialize for Topology {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.nodes, &self.groups, self.last_token).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Topology {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (nodes, groups, last_token) =
            <(BTreeMap<String, Node>, BTreeMap<String, Group>, u64)>::deserialize(deserializer)?;
        let mut topology = Topology {
            nodes,
            groups,
            last_token,
            ..Topology::default()
        };
        let mut roles = Vec::new();
        for (gname, g) in &topology.groups {
            for (rname, r) in &g.roles {
                topology.candidates = topology.candidates.saturating_add(r.candidate_count());
                roles.push((gname.clone(), rname.clone()));
            }
        }
        for (g, r) in roles {
            topology.sync_deadline(&g, &r);
        }
        Ok(topology)
    }
}

/// Grants `candidate` a slot of `r` with `token` (it must be waiting), and
/// records what every grant records: the last token issued and a `Granted`
/// event. Returns whether the candidate was granted.
fn grant_recorded(
    r: &mut Role,
    last_token: &mut u64,
    fx: &mut Effects,
    group: &str,
    role: &str,
    candidate: &str,
    token: u64,
) -> bool {
    let Some(holder) = r.grant(candidate, token, fx.at) else {
        return false;
    };
    let lease = holder.candidate.lease;
    *last_token = token;
    fx.events.push(Event::Granted {
        group: group.to_owned(),
        role: role.to_owned(),
        candidate: candidate.to_owned(),
        lease,
        token,
    });
    true
}
