//! Runs the coordination commands and renders their results.

use std::io::Write;
use std::time::Duration;

use roster_client::proto::event::Event as EventKind;
use roster_client::proto::role_spec::Failover;
use roster_client::proto::{
    Event, GetTopologyResponse, Grant, Group, HoldersRequest, HoldersResponse, LeaseListResponse,
    LeaseTimeToLiveResponse, ManagedNode, PutGroupRequest, ResponseHeader, RoleChange, RoleSpec, Waiting,
};
use roster_client::{CampaignOptions, CampaignState, Client, KeeperOptions, LeaseState, WatchEvent, WatchOptions};
use serde_json::{json, Value};
use tokio_stream::StreamExt;

use crate::coord_args::{GroupCommand, GroupSpec, LeaseCommand, NodeCommand, RoleCommand, TopologyCommand};
use crate::output::{document, finish, header_json, kv_json, lease_text, revision, table, text};
use crate::run::Failure;

/// Prints one line at once (long-running commands).
pub fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn ok(header: Option<&ResponseHeader>, what: &str, json: bool) -> Vec<u8> {
    if json {
        return document(&json!({ "header": header_json(header), "result": what }));
    }
    format!("{what} (revision {})\n", revision(header)).into_bytes()
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return "interrupted (SIGINT)",
                _ = term.recv() => return "terminated (SIGTERM)",
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "interrupted (SIGINT)"
}

fn ms(d: u64) -> String {
    format!("{:?}", Duration::from_millis(d))
}

// ---------------------------------------------------------------- lease

pub async fn lease(client: &Client, cmd: LeaseCommand, json: bool) -> Result<Vec<u8>, Failure> {
    Ok(match cmd {
        LeaseCommand::Grant { ttl, id } => {
            let r = client.lease_grant_with_id(id.unwrap_or(0), ttl).await?;
            if json {
                document(
                    &json!({"header": header_json(r.header.as_ref()), "id": r.id, "id_hex": format!("{:x}", r.id), "ttl_ms": r.ttl_ms}),
                )
            } else {
                format!("lease {:x} granted with TTL {}\n", r.id, ms(r.ttl_ms)).into_bytes()
            }
        }
        LeaseCommand::Revoke { id } => ok(
            client.lease_revoke(id).await?.header.as_ref(),
            &format!("lease {id:x} revoked"),
            json,
        ),
        LeaseCommand::List => lease_list(&client.lease_list().await?, json),
        LeaseCommand::Ttl { id, keys } => lease_ttl(&client.lease_time_to_live(id, keys).await?, json),
        LeaseCommand::Keepalive { id } => {
            let info = client.lease_time_to_live(id, false).await?;
            if info.granted_ttl_ms == 0 {
                return Err(Failure::Local(format!("lease {id:x} not found")));
            }
            let keeper = client
                .keep_lease(id, Duration::from_millis(info.granted_ttl_ms), KeeperOptions::default())
                .await?;
            let mut states = keeper.subscribe();
            let kind = |state: &LeaseState| match state {
                LeaseState::Healthy { .. } => "healthy",
                LeaseState::Jeopardy { .. } => "jeopardy",
                LeaseState::Lost { .. } => "lost",
            };
            let print = |state: &LeaseState| {
                if json {
                    emit(
                        &json!({"lease": format!("{id:x}"), "state": kind(state), "detail": state.to_string()})
                            .to_string(),
                    );
                } else {
                    emit(&format!("lease {id:x}: {state}"));
                }
            };
            let mut last = states.borrow_and_update().clone();
            print(&last);
            let interrupt = interrupted();
            tokio::pin!(interrupt);
            loop {
                tokio::select! {
                    _ = &mut interrupt => return Ok(Vec::new()),
                    reason = keeper.lost() => {
                        print(&LeaseState::Lost { reason: reason.clone() });
                        return Err(Failure::Local(format!("lease {id:x} lost: {reason}")));
                    }
                    changed = states.changed() => {
                        if changed.is_err() { continue; }
                        let state = states.borrow_and_update().clone();
                        // The deadline moves on every renewal: print changes of kind or reason only.
                        let reason_changed = matches!((&state, &last),
                            (LeaseState::Jeopardy { reason: a, .. }, LeaseState::Jeopardy { reason: b, .. }) if a != b);
                        if kind(&state) != kind(&last) || reason_changed {
                            print(&state);
                        }
                        last = state;
                    }
                }
            }
        }
    })
}

fn lease_list(r: &LeaseListResponse, json: bool) -> Vec<u8> {
    if json {
        let leases: Vec<Value> = r
            .leases
            .iter()
            .map(|l| json!({"id": l.id, "id_hex": format!("{:x}", l.id), "ttl_ms": l.ttl_ms, "remaining_ms": l.remaining_ms, "attached_keys": l.attached_keys}))
            .collect();
        return document(&json!({"header": header_json(r.header.as_ref()), "leases": leases}));
    }
    let mut t = table(&["ID", "TTL", "REMAINING", "KEYS"]);
    for l in &r.leases {
        t.add_row(vec![
            format!("{:x}", l.id),
            ms(l.ttl_ms),
            ms(l.remaining_ms),
            l.attached_keys.to_string(),
        ]);
    }
    let mut out = String::new();
    finish(&mut t, &mut out);
    out.into_bytes()
}

fn lease_ttl(r: &LeaseTimeToLiveResponse, json: bool) -> Vec<u8> {
    if json {
        let keys: Vec<Value> = r.keys.iter().map(|k| Value::String(text(k).into_owned())).collect();
        return document(
            &json!({"header": header_json(r.header.as_ref()), "id": r.id, "id_hex": format!("{:x}", r.id),
            "granted_ttl_ms": r.granted_ttl_ms, "remaining_ms": r.remaining_ms, "keys": keys}),
        );
    }
    let mut out = format!(
        "lease {:x}: granted TTL {}, remaining {}\n",
        r.id,
        ms(r.granted_ttl_ms),
        ms(r.remaining_ms)
    );
    for k in &r.keys {
        out.push_str(&format!("  {}\n", text(k)));
    }
    out.into_bytes()
}

// ---------------------------------------------------------------- roles

fn grant_json(g: &Grant) -> Value {
    json!({"candidate": g.candidate, "lease": g.lease, "lease_hex": format!("{:x}", g.lease), "token": g.token, "granted_revision": g.granted_revision})
}

fn waiting_json(w: &Waiting) -> Value {
    json!({"candidate": w.candidate, "lease": w.lease, "priority": w.priority, "progress": w.progress, "position": w.position})
}

fn holders_tables(holders: &[Grant], waiting: &[Waiting], out: &mut String) {
    if holders.is_empty() {
        out.push_str("(no holder)\n");
    } else {
        let mut t = table(&["HOLDER", "TOKEN", "LEASE", "GRANTED REV"]);
        for g in holders {
            t.add_row(vec![
                g.candidate.clone(),
                g.token.to_string(),
                lease_text(g.lease),
                g.granted_revision.to_string(),
            ]);
        }
        finish(&mut t, out);
    }
    if !waiting.is_empty() {
        out.push('\n');
        let mut t = table(&["POSITION", "WAITING", "PRIORITY", "PROGRESS", "LEASE"]);
        for w in waiting {
            t.add_row(vec![
                w.position.to_string(),
                w.candidate.clone(),
                w.priority.to_string(),
                w.progress.to_string(),
                lease_text(w.lease),
            ]);
        }
        finish(&mut t, out);
    }
}

fn holders_out(r: &HoldersResponse, json: bool) -> Vec<u8> {
    if json {
        return document(&json!({
            "header": header_json(r.header.as_ref()),
            "holders": r.holders.iter().map(grant_json).collect::<Vec<_>>(),
            "waiting": r.waiting.iter().map(waiting_json).collect::<Vec<_>>(),
        }));
    }
    let mut out = String::new();
    holders_tables(&r.holders, &r.waiting, &mut out);
    out.into_bytes()
}

pub async fn role(client: &Client, cmd: RoleCommand, json: bool) -> Result<Vec<u8>, Failure> {
    Ok(match cmd {
        RoleCommand::Holders { target, serializable } => {
            let r = client
                .holders_with(HoldersRequest {
                    group: target.group,
                    role: target.role,
                    serializable,
                })
                .await?;
            holders_out(&r, json)
        }
        RoleCommand::Resign { target, candidate } => {
            let r = client.resign(&target.group, &target.role, &candidate).await?;
            ok(
                r.header.as_ref(),
                &format!("{candidate} resigned from {}/{}", target.group, target.role),
                json,
            )
        }
        RoleCommand::Switchover { target, to, from } => {
            let r = client
                .switchover(&target.group, &target.role, &to, from.as_deref())
                .await?;
            let g = r.granted.unwrap_or_default();
            if json {
                document(&json!({"header": header_json(r.header.as_ref()), "granted": grant_json(&g), "from": r.from}))
            } else {
                format!(
                    "{}/{} switched over from {} to {} (token {}, revision {})\n",
                    target.group,
                    target.role,
                    r.from,
                    g.candidate,
                    g.token,
                    revision(r.header.as_ref())
                )
                .into_bytes()
            }
        }
        RoleCommand::Promote { target, candidate } => {
            let r = client.promote(&target.group, &target.role, &candidate).await?;
            let g = r.granted.unwrap_or_default();
            if json {
                document(&json!({"header": header_json(r.header.as_ref()), "granted": grant_json(&g)}))
            } else {
                format!(
                    "{} promoted to {}/{} (token {}, revision {})\n",
                    g.candidate,
                    target.group,
                    target.role,
                    g.token,
                    revision(r.header.as_ref())
                )
                .into_bytes()
            }
        }
        RoleCommand::Observe { target } => {
            let mut stream = client.observe(&target.group, &target.role);
            let interrupt = interrupted();
            tokio::pin!(interrupt);
            loop {
                tokio::select! {
                    _ = &mut interrupt => return Ok(Vec::new()),
                    item = stream.next() => match item {
                        None => return Ok(Vec::new()),
                        Some(Err(e)) => return Err(e.into()),
                        Some(Ok(holders)) => {
                            if json {
                                emit(&json!({"holders": holders.iter().map(grant_json).collect::<Vec<_>>()}).to_string());
                            } else if holders.is_empty() {
                                emit(&format!("{}/{}: no holder", target.group, target.role));
                            } else {
                                let list: Vec<String> = holders.iter().map(|g| format!("{} (token {})", g.candidate, g.token)).collect();
                                emit(&format!("{}/{}: {}", target.group, target.role, list.join(", ")));
                            }
                        }
                    }
                }
            }
        }
        RoleCommand::Campaign {
            target,
            candidate,
            ttl,
            priority,
            progress,
        } => {
            let keeper = client.grant_and_keep(ttl, KeeperOptions::default()).await?;
            let (group, role) = (target.group.clone(), target.role.clone());
            let opts = CampaignOptions::default()
                .priority(priority)
                .progress(progress)
                .on_state(move |state| match state {
                    CampaignState::Queued(p) if json => emit(&json!({"state": "queued", "position": p}).to_string()),
                    CampaignState::Queued(p) => emit(&format!("{group}/{role}: queued at position {p}")),
                    CampaignState::Elected(_) => {}
                });
            let interrupt = interrupted();
            tokio::pin!(interrupt);
            let guard = tokio::select! {
                _ = &mut interrupt => {
                    let _ = client.resign(&target.group, &target.role, &candidate).await;
                    let _ = keeper.revoke().await;
                    return Ok(Vec::new());
                }
                guard = client.campaign(&target.group, &target.role, &candidate, &keeper, opts) => guard?,
            };
            if json {
                emit(&json!({"state": "elected", "token": guard.token(), "lease": guard.lease_id(), "lease_hex": format!("{:x}", guard.lease_id())}).to_string());
            } else {
                emit(&format!(
                    "{}/{}: elected {candidate} (token {}, lease {:x}); holding until Ctrl-C",
                    target.group,
                    target.role,
                    guard.token(),
                    guard.lease_id()
                ));
            }
            tokio::select! {
                _ = &mut interrupt => {
                    guard.resign().await?;
                    let _ = keeper.revoke().await;
                    if json { emit(&json!({"state": "resigned"}).to_string()); } else { emit(&format!("{}/{}: resigned", target.group, target.role)); }
                    Vec::new()
                }
                lost = guard.lost() => {
                    return Err(Failure::Local(format!("{}/{}: role lost: {lost}", target.group, target.role)));
                }
            }
        }
    })
}

// ---------------------------------------------------------------- topology

fn failover_name(f: i32) -> &'static str {
    if f == Failover::Manual as i32 {
        "manual"
    } else {
        "automatic"
    }
}

fn node_json(n: &ManagedNode) -> Value {
    json!({"id": n.id, "address": n.address, "zone": n.zone, "labels": n.labels, "lease": n.lease, "alive": n.alive})
}

fn spec_json(r: &RoleSpec) -> Value {
    json!({"name": r.name, "capacity": r.capacity, "failover": failover_name(r.failover),
        "handover_delay_ms": r.handover_delay_ms, "max_lag": r.max_lag})
}

fn group_json(g: &Group) -> Value {
    json!({
        "name": g.name,
        "roles": g.roles.iter().map(spec_json).collect::<Vec<_>>(),
        "members": g.members.iter().map(|m| json!({"node": m.node, "priorities": m.priorities})).collect::<Vec<_>>(),
        "state": g.state.iter().map(|s| json!({
            "name": s.name,
            "holders": s.holders.iter().map(grant_json).collect::<Vec<_>>(),
            "waiting": s.waiting.iter().map(waiting_json).collect::<Vec<_>>(),
            "blocked_until_ms": s.blocked_until_ms,
            "vacancies": s.vacancies,
        })).collect::<Vec<_>>(),
    })
}

fn topology_out(r: &GetTopologyResponse, json: bool) -> Vec<u8> {
    if json {
        return document(&json!({
            "header": header_json(r.header.as_ref()),
            "nodes": r.nodes.iter().map(node_json).collect::<Vec<_>>(),
            "groups": r.groups.iter().map(group_json).collect::<Vec<_>>(),
        }));
    }
    let mut out = format!("revision {}\n\n", revision(r.header.as_ref()));
    if r.nodes.is_empty() {
        out.push_str("(no nodes)\n");
    } else {
        let mut t = table(&["NODE", "ADDRESS", "ZONE", "ALIVE", "LEASE", "LABELS"]);
        for n in &r.nodes {
            let mut labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            t.add_row(vec![
                n.id.clone(),
                n.address.clone(),
                if n.zone.is_empty() { "-".into() } else { n.zone.clone() },
                if n.alive { "yes" } else { "no" }.into(),
                lease_text(n.lease),
                labels.join(","),
            ]);
        }
        finish(&mut t, &mut out);
    }
    out.push('\n');
    if r.groups.is_empty() {
        out.push_str("(no groups)\n");
        return out.into_bytes();
    }
    let mut t = table(&["GROUP", "ROLE", "CAPACITY", "FAILOVER", "HOLDERS", "WAITING"]);
    for g in &r.groups {
        for spec in &g.roles {
            let state = g.state.iter().find(|s| s.name == spec.name);
            let holders = state
                .map(|s| {
                    s.holders
                        .iter()
                        .map(|h| format!("{}@{}", h.candidate, h.token))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "-".into());
            let waiting = state
                .map(|s| {
                    s.waiting
                        .iter()
                        .map(|w| w.candidate.clone())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "-".into());
            t.add_row(vec![
                g.name.clone(),
                spec.name.clone(),
                spec.capacity.to_string(),
                failover_name(spec.failover).into(),
                holders,
                waiting,
            ]);
        }
    }
    finish(&mut t, &mut out);
    let members: Vec<_> = r
        .groups
        .iter()
        .flat_map(|g| g.members.iter().map(move |m| (g, m)))
        .collect();
    if !members.is_empty() {
        out.push('\n');
        let mut t = table(&["GROUP", "MEMBER", "PRIORITIES"]);
        for (g, m) in members {
            let mut prios: Vec<String> = m.priorities.iter().map(|(k, v)| format!("{k}={v}")).collect();
            prios.sort();
            t.add_row(vec![g.name.clone(), m.node.clone(), prios.join(",")]);
        }
        finish(&mut t, &mut out);
    }
    out.into_bytes()
}

fn role_change_text(c: &RoleChange) -> String {
    let mut s = format!("{}/{} {}", c.group, c.role, c.candidate);
    if c.token != 0 {
        s.push_str(&format!(" token={}", c.token));
    }
    if c.lease != 0 {
        s.push_str(&format!(" lease={:x}", c.lease));
    }
    if !c.reason.is_empty() {
        s.push_str(&format!(" reason={}", c.reason));
    }
    s
}

fn role_change_json(c: &RoleChange) -> Value {
    json!({"group": c.group, "role": c.role, "candidate": c.candidate, "token": c.token, "reason": c.reason, "lease": c.lease})
}

/// One watch event: (text line, JSON object).
pub fn event_line(e: &Event) -> (String, Value) {
    let rev = e.revision;
    let (kind, text_detail, detail) = match &e.event {
        Some(EventKind::Put(kv)) => (
            "put",
            format!("{} = {}", text(&kv.key), text(&kv.value)),
            kv_json(kv, false),
        ),
        Some(EventKind::Delete(kv)) => ("delete", text(&kv.key).into_owned(), kv_json(kv, true)),
        Some(EventKind::LeaseEnded(id)) => ("lease_ended", format!("{id:x}"), json!({"id": id})),
        Some(EventKind::LeaseGranted(l)) => (
            "lease_granted",
            format!("{:x} ttl={}", l.id, ms(l.ttl_ms)),
            json!({"id": l.id, "ttl_ms": l.ttl_ms}),
        ),
        Some(EventKind::Granted(c)) => ("granted", role_change_text(c), role_change_json(c)),
        Some(EventKind::Released(c)) => ("released", role_change_text(c), role_change_json(c)),
        Some(EventKind::Campaigned(c)) => ("campaigned", role_change_text(c), role_change_json(c)),
        Some(EventKind::Withdrawn(c)) => ("withdrawn", role_change_text(c), role_change_json(c)),
        Some(EventKind::NodeChanged(n)) => ("node_changed", n.clone(), json!({"node": n})),
        Some(EventKind::GroupChanged(g)) => ("group_changed", g.clone(), json!({"group": g})),
        None => ("unknown", String::new(), Value::Null),
    };
    (
        format!("{rev}  {kind:<13} {text_detail}"),
        json!({"revision": rev, "type": kind, "event": detail}),
    )
}

pub async fn topology(client: &Client, cmd: TopologyCommand, json: bool) -> Result<Vec<u8>, Failure> {
    match cmd {
        TopologyCommand::Show { serializable } => Ok(topology_out(&client.topology_with(serializable).await?, json)),
        TopologyCommand::Watch { after, prefixes } => {
            let opts = WatchOptions {
                after_revision: after,
                key_prefixes: prefixes.into_iter().map(String::into_bytes).collect(),
                coordination: true,
            };
            let mut stream = client.watch(opts);
            let interrupt = interrupted();
            tokio::pin!(interrupt);
            loop {
                tokio::select! {
                    _ = &mut interrupt => return Ok(Vec::new()),
                    item = stream.next() => match item {
                        None => return Ok(Vec::new()),
                        Some(Err(e)) => return Err(e.into()),
                        Some(Ok(WatchEvent::Started { revision })) => {
                            eprintln!("watching events after revision {revision}");
                        }
                        Some(Ok(WatchEvent::Compacted { oldest_available })) => {
                            return Err(Failure::Local(format!(
                                "compacted: events before revision {oldest_available} are no longer retained; \
                                 re-read the state (rosterctl topology show) and watch from its revision"
                            )));
                        }
                        Some(Ok(WatchEvent::Change(event))) => {
                            let (line, value) = event_line(&event);
                            if json { emit(&value.to_string()) } else { emit(&line) }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- nodes, groups

pub async fn node(client: &Client, cmd: NodeCommand, json: bool) -> Result<Vec<u8>, Failure> {
    Ok(match cmd {
        NodeCommand::Register {
            id,
            address,
            zone,
            labels,
            lease,
        } => {
            let r = client
                .register_node(ManagedNode {
                    id: id.clone(),
                    address,
                    zone,
                    labels: labels.into_iter().collect(),
                    lease: lease.unwrap_or(0),
                    alive: false,
                })
                .await?;
            ok(r.header.as_ref(), &format!("node {id} registered"), json)
        }
        NodeCommand::Deregister { id } => {
            let r = client.deregister_node(&id).await?;
            ok(r.header.as_ref(), &format!("node {id} deregistered"), json)
        }
    })
}

fn put_group_request(spec: GroupSpec, create: bool, force: bool) -> PutGroupRequest {
    PutGroupRequest {
        name: spec.name,
        roles: spec.roles,
        members: spec.members,
        create,
        force,
        ..Default::default()
    }
}

pub async fn group(client: &Client, cmd: GroupCommand, json: bool) -> Result<Vec<u8>, Failure> {
    Ok(match cmd {
        GroupCommand::Create { spec } => {
            let name = spec.name.clone();
            let r = client.put_group(put_group_request(spec, true, false)).await?;
            ok(r.header.as_ref(), &format!("group {name} created"), json)
        }
        GroupCommand::Update { spec, force } => {
            let name = spec.name.clone();
            let r = client.put_group(put_group_request(spec, false, force)).await?;
            ok(r.header.as_ref(), &format!("group {name} updated"), json)
        }
        GroupCommand::Delete { name } => {
            let r = client.delete_group(&name).await?;
            ok(r.header.as_ref(), &format!("group {name} deleted"), json)
        }
    })
}
