//! Rendering of results: aligned tables for people, JSON for programs.
//!
//! Keys and values are bytes. In tables they print verbatim when they are
//! UTF-8 without control characters, else in escaped form (`\xHH` for a byte
//! that is not UTF-8 or a control character, `\n`, `\t`, `\r`, and `\\` for
//! a backslash). In JSON a UTF-8 key or value is a plain JSON string
//! (lossless); otherwise the string holds the escaped form and a sibling
//! field `key_escaped` / `value_escaped` is `true`. The escaped form is
//! accepted back inside quotes by `kv txn` expressions.

use std::borrow::Cow;
use std::fmt::Write as _;

use comfy_table::{presets, Table};
use roster_client::proto::response_op::Response;
use roster_client::proto::{
    DeleteResponse, KeyValue, Member, MemberListResponse, MemberStatus, PutResponse, RangeResponse, ResponseHeader,
    StatusResponse, TxnResponse,
};
use serde_json::{json, Map, Value};

/// How to show the pairs of a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeView {
    pub keys_only: bool,
    pub count_only: bool,
    pub values_only: bool,
}

// ---------------------------------------------------------------- bytes

/// `bytes` for a terminal: verbatim when clean UTF-8, else escaped.
pub fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => Cow::Borrowed(s),
        _ => Cow::Owned(escape(bytes)),
    }
}

/// The escaped form of `bytes` (see the module docs).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Inserts `field` (and `field_escaped: true` when needed) into `map`.
fn put_bytes(map: &mut Map<String, Value>, field: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            map.insert(field.to_owned(), Value::String(s.to_owned()));
        }
        Err(_) => {
            map.insert(field.to_owned(), Value::String(escape(bytes)));
            map.insert(format!("{field}_escaped"), Value::Bool(true));
        }
    }
}

// ---------------------------------------------------------------- JSON

pub(crate) fn header_json(header: Option<&ResponseHeader>) -> Value {
    let h = header.copied().unwrap_or_default();
    json!({
        "revision": h.revision,
        "raft_term": h.raft_term,
        "member_id": h.member_id,
        "serializable": h.serializable,
    })
}

pub(crate) fn kv_json(kv: &KeyValue, keys_only: bool) -> Value {
    let mut map = Map::new();
    put_bytes(&mut map, "key", &kv.key);
    if !keys_only {
        put_bytes(&mut map, "value", &kv.value);
    }
    map.insert("create_revision".into(), kv.create_revision.into());
    map.insert("mod_revision".into(), kv.mod_revision.into());
    map.insert("version".into(), kv.version.into());
    map.insert("lease".into(), kv.lease.into());
    Value::Object(map)
}

fn put_json(r: &PutResponse) -> Value {
    json!({
        "header": header_json(r.header.as_ref()),
        "prev_kv": r.prev_kv.as_ref().map(|kv| kv_json(kv, false)),
    })
}

fn range_json(r: &RangeResponse, view: RangeView) -> Value {
    let mut doc = json!({
        "header": header_json(r.header.as_ref()),
        "count": r.count,
        "more": r.more,
    });
    if !view.count_only {
        doc["kvs"] = r.kvs.iter().map(|kv| kv_json(kv, view.keys_only)).collect();
    }
    doc
}

fn delete_json(r: &DeleteResponse) -> Value {
    json!({
        "header": header_json(r.header.as_ref()),
        "deleted": r.deleted,
        "prev_kvs": r.prev_kvs.iter().map(|kv| kv_json(kv, false)).collect::<Vec<_>>(),
    })
}

fn txn_json(r: &TxnResponse) -> Value {
    let responses: Vec<Value> = r
        .responses
        .iter()
        .map(|op| match &op.response {
            Some(Response::Put(p)) => json!({ "put": put_json(p) }),
            Some(Response::Range(g)) => json!({ "range": range_json(g, RangeView::default()) }),
            Some(Response::Delete(d)) => json!({ "delete": delete_json(d) }),
            None => Value::Null,
        })
        .collect();
    json!({
        "header": header_json(r.header.as_ref()),
        "succeeded": r.succeeded,
        "responses": responses,
    })
}

fn member_json(m: &Member) -> Value {
    json!({ "id": m.id, "addr": m.addr, "voter": m.voter })
}

fn members_json(members: &[Member]) -> Value {
    Value::Array(members.iter().map(member_json).collect())
}

fn member_status_json(m: &MemberStatus) -> Value {
    json!({
        "id": m.id,
        "addr": m.addr,
        "voter": m.voter,
        "reachable": m.reachable,
        "error": m.error,
        "state": m.state,
        "term": m.term,
        "leader_id": m.leader_id,
        "last_log_index": m.last_log_index,
        "commit_index": m.commit_index,
        "applied_index": m.applied_index,
        "snapshot_index": m.snapshot_index,
        "revision": m.revision,
        "matched_index": m.matched_index,
        "version": m.version,
    })
}

pub(crate) fn document(value: &Value) -> Vec<u8> {
    // Serializing a Value cannot fail.
    let mut out = serde_json::to_vec_pretty(value).unwrap_or_default();
    out.push(b'\n');
    out
}

// ---------------------------------------------------------------- tables

/// A borderless, left-aligned table (columns two spaces apart), easy to
/// read and to `grep`/`awk`.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.to_vec());
    t
}

pub(crate) fn finish(t: &mut Table, out: &mut String) {
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    out.push_str(&t.trim_fmt());
    out.push('\n');
}

fn kv_table(kvs: &[KeyValue], keys_only: bool, out: &mut String) {
    let with_lease = kvs.iter().any(|kv| kv.lease != 0);
    let mut header = vec!["KEY"];
    if !keys_only {
        header.push("VALUE");
    }
    header.extend(["CREATE REV", "MOD REV", "VERSION"]);
    if with_lease {
        header.push("LEASE");
    }
    let mut t = table(&header);
    for kv in kvs {
        let mut row = vec![text(&kv.key).into_owned()];
        if !keys_only {
            row.push(text(&kv.value).into_owned());
        }
        row.extend([
            kv.create_revision.to_string(),
            kv.mod_revision.to_string(),
            kv.version.to_string(),
        ]);
        if with_lease {
            row.push(lease_text(kv.lease));
        }
        t.add_row(row);
    }
    finish(&mut t, out);
}

pub(crate) fn lease_text(lease: i64) -> String {
    if lease == 0 {
        "-".into()
    } else {
        format!("{lease:x}")
    }
}

/// Members by id; with a LEADER column (`*` on the leader) when the leader
/// is known.
fn members_table(members: &[Member], leader_id: Option<u64>, out: &mut String) {
    let mut t = if leader_id.is_some() {
        table(&["ID", "ADDRESS", "ROLE", "LEADER"])
    } else {
        table(&["ID", "ADDRESS", "ROLE"])
    };
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by_key(|m| m.id);
    for m in sorted {
        let mut row = vec![m.id.to_string(), m.addr.clone(), role(m.voter).to_owned()];
        if leader_id.is_some() {
            row.push(if leader_id == Some(m.id) { "*" } else { "" }.to_owned());
        }
        t.add_row(row);
    }
    finish(&mut t, out);
}

fn role(voter: bool) -> &'static str {
    if voter {
        "voter"
    } else {
        "learner"
    }
}

// ---------------------------------------------------------------- commands

/// `kv put`.
pub fn put(r: &PutResponse, prev_kv: bool, json: bool) -> Vec<u8> {
    if json {
        return document(&put_json(r));
    }
    let mut out = format!("OK (revision {})\n", revision(r.header.as_ref()));
    if prev_kv {
        match &r.prev_kv {
            Some(kv) => {
                out.push_str("previous:\n");
                kv_table(std::slice::from_ref(kv), false, &mut out);
            }
            None => out.push_str("(no previous value)\n"),
        }
    }
    out.into_bytes()
}

/// `kv get` / `kv range`.
pub fn range(r: &RangeResponse, view: RangeView, json: bool) -> Vec<u8> {
    if json {
        return document(&range_json(r, view));
    }
    if view.count_only {
        return format!("{}\n", r.count).into_bytes();
    }
    if view.values_only {
        let mut out = Vec::new();
        for kv in &r.kvs {
            out.extend_from_slice(&kv.value);
            out.push(b'\n');
        }
        return out;
    }
    let mut out = String::new();
    range_text(r, view, &mut out);
    out.into_bytes()
}

fn range_text(r: &RangeResponse, view: RangeView, out: &mut String) {
    if r.kvs.is_empty() {
        out.push_str("(no matching keys)\n");
    } else {
        kv_table(&r.kvs, view.keys_only, out);
    }
    if r.more {
        let _ = writeln!(
            out,
            "(showing {} of {} matching keys; raise --limit to see more)",
            r.kvs.len(),
            r.count
        );
    }
}

/// `kv del`.
pub fn delete(r: &DeleteResponse, prev_kv: bool, json: bool) -> Vec<u8> {
    if json {
        return document(&delete_json(r));
    }
    let mut out = String::new();
    delete_text(r, prev_kv, &mut out);
    out.into_bytes()
}

fn delete_text(r: &DeleteResponse, prev_kv: bool, out: &mut String) {
    let _ = writeln!(
        out,
        "deleted {} key{} (revision {})",
        r.deleted,
        if r.deleted == 1 { "" } else { "s" },
        revision(r.header.as_ref())
    );
    if prev_kv && !r.prev_kvs.is_empty() {
        out.push_str("previous:\n");
        kv_table(&r.prev_kvs, false, out);
    }
}

/// `kv txn`.
pub fn txn(r: &TxnResponse, json: bool) -> Vec<u8> {
    if json {
        return document(&txn_json(r));
    }
    let mut out = if r.succeeded {
        format!(
            "SUCCESS: all compares held, --then ran (revision {})\n",
            revision(r.header.as_ref())
        )
    } else {
        format!(
            "FAILURE: a compare did not hold, --else ran (revision {})\n",
            revision(r.header.as_ref())
        )
    };
    for (i, op) in r.responses.iter().enumerate() {
        let _ = write!(out, "[{}] ", i + 1);
        match &op.response {
            Some(Response::Put(_)) => out.push_str("put: OK\n"),
            Some(Response::Delete(d)) => {
                out.push_str("del: ");
                delete_text(d, true, &mut out);
            }
            Some(Response::Range(g)) => {
                out.push_str("get:\n");
                range_text(g, RangeView::default(), &mut out);
            }
            None => out.push_str("(empty response)\n"),
        }
    }
    out.into_bytes()
}

/// `status`.
pub fn status(r: &StatusResponse, json: bool) -> Vec<u8> {
    if json {
        return document(&json!({
            "cluster_name": r.cluster_name,
            "leader_id": r.leader_id,
            "term": r.term,
            "answered_by": r.answered_by,
            "members": r.members.iter().map(member_status_json).collect::<Vec<_>>(),
        }));
    }
    let mut members: Vec<&MemberStatus> = r.members.iter().collect();
    members.sort_by_key(|m| m.id);
    let leader = if r.leader_id == 0 {
        "none".to_owned()
    } else {
        match members.iter().find(|m| m.id == r.leader_id) {
            Some(m) if !m.addr.is_empty() => format!("{} ({})", r.leader_id, m.addr),
            _ => r.leader_id.to_string(),
        }
    };
    let name = if r.cluster_name.is_empty() {
        "-"
    } else {
        &r.cluster_name
    };
    let mut out = format!(
        "cluster: {name}  leader: {leader}  term: {}  answered by: {}\n",
        r.term, r.answered_by
    );
    let mut t = table(&[
        "ID", "ADDRESS", "ROLE", "STATE", "TERM", "LEADER", "LAST LOG", "COMMIT", "APPLIED", "REVISION",
    ]);
    for m in &members {
        let mut row = vec![m.id.to_string(), m.addr.clone(), role(m.voter).to_owned()];
        if m.reachable {
            row.extend([
                if m.state.is_empty() { "-" } else { &m.state }.to_owned(),
                m.term.to_string(),
                if m.leader_id == 0 {
                    "-".to_owned()
                } else {
                    m.leader_id.to_string()
                },
                m.last_log_index.to_string(),
                m.commit_index.to_string(),
                m.applied_index.to_string(),
                m.revision.to_string(),
            ]);
        } else {
            row.push("unreachable".to_owned());
            row.extend(std::iter::repeat_n("-".to_owned(), 6));
        }
        t.add_row(row);
    }
    finish(&mut t, &mut out);
    let unreachable: Vec<&&MemberStatus> = members.iter().filter(|m| !m.reachable).collect();
    if !unreachable.is_empty() {
        out.push_str("unreachable members:\n");
        for m in unreachable {
            let why = if m.error.is_empty() { "no answer" } else { &m.error };
            let _ = writeln!(out, "  {} ({}): {}", m.id, m.addr, why.trim());
        }
    }
    out.into_bytes()
}

/// `member list`.
pub fn member_list(r: &MemberListResponse, json: bool) -> Vec<u8> {
    if json {
        return document(&json!({
            "leader_id": r.leader_id,
            "members": members_json(&r.members),
        }));
    }
    let mut out = String::new();
    let leader = (r.leader_id != 0).then_some(r.leader_id);
    members_table(&r.members, leader, &mut out);
    out.into_bytes()
}

/// `member add|promote|remove`: a sentence, then the new membership.
pub fn member_change(summary: &str, members: &[Member], json: bool) -> Vec<u8> {
    if json {
        return document(&json!({ "members": members_json(members) }));
    }
    let mut out = format!("{summary}\n");
    members_table(members, None, &mut out);
    out.into_bytes()
}

pub(crate) fn revision(header: Option<&ResponseHeader>) -> u64 {
    header.map_or(0, |h| h.revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_client::proto::ResponseOp;

    fn s(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    fn kv(key: &[u8], value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: 3,
            mod_revision: 5,
            version: 2,
            lease: 0,
        }
    }

    fn header(revision: u64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision,
            raft_term: 2,
            member_id: 1,
            serializable: false,
        })
    }

    #[test]
    fn escaping() {
        assert_eq!(text(b"plain/key"), "plain/key");
        assert_eq!(text("héllo".as_bytes()), "héllo");
        assert_eq!(text(b"a\\b"), "a\\b"); // clean: verbatim
        assert_eq!(text(b"a\nb\\"), "a\\nb\\\\");
        assert_eq!(text(b"\xff\x00ok"), "\\xff\\x00ok");
        assert_eq!(escape(b"\x1b[0m\t"), "\\x1b[0m\\t");
        assert_eq!(escape("é\u{85}".as_bytes()), "é\\xc2\\x85");
    }

    #[test]
    fn json_marks_escaped_bytes() {
        let v = kv_json(&kv(b"k\xff", b"v"), false);
        assert_eq!(v["key"], "k\\xff");
        assert_eq!(v["key_escaped"], true);
        assert_eq!(v["value"], "v");
        assert!(v.get("value_escaped").is_none());
        let v = kv_json(&kv(b"k", b"line\n"), true);
        assert_eq!(v["key"], "k");
        assert!(v.get("value").is_none());
    }

    #[test]
    fn range_table_and_json() {
        let r = RangeResponse {
            header: header(9),
            kvs: vec![kv(b"app/a", b"1"), kv(b"app/b", b"\xfe")],
            more: true,
            count: 5,
        };
        let out = s(range(&r, RangeView::default(), false));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("KEY"), "{out}");
        assert!(lines[0].contains("VALUE") && lines[0].contains("MOD REV"));
        assert!(!lines[0].contains("LEASE"));
        assert!(lines[1].starts_with("app/a  "), "{out}");
        assert!(lines[2].contains("\\xfe"), "{out}");
        assert!(lines[3].contains("showing 2 of 5"), "{out}");
        assert!(out.lines().all(|l| l == l.trim_end()));

        let keys = s(range(
            &r,
            RangeView {
                keys_only: true,
                ..Default::default()
            },
            false,
        ));
        assert!(!keys.contains("VALUE"));

        let count = s(range(
            &r,
            RangeView {
                count_only: true,
                ..Default::default()
            },
            false,
        ));
        assert_eq!(count, "5\n");

        let values = range(
            &r,
            RangeView {
                values_only: true,
                ..Default::default()
            },
            false,
        );
        assert_eq!(values, b"1\n\xfe\n");

        let doc: Value = serde_json::from_slice(&range(&r, RangeView::default(), true)).unwrap();
        assert_eq!(doc["header"]["revision"], 9);
        assert_eq!(doc["count"], 5);
        assert_eq!(doc["more"], true);
        assert_eq!(doc["kvs"][0]["key"], "app/a");
        assert_eq!(doc["kvs"][1]["value_escaped"], true);
    }

    #[test]
    fn empty_range() {
        let r = RangeResponse::default();
        assert_eq!(s(range(&r, RangeView::default(), false)), "(no matching keys)\n");
        let doc: Value = serde_json::from_slice(&range(&r, RangeView::default(), true)).unwrap();
        assert_eq!(doc["kvs"], json!([]));
    }

    #[test]
    fn lease_column_appears_when_used() {
        let mut leased = kv(b"k", b"v");
        leased.lease = 255;
        let r = RangeResponse {
            header: header(1),
            kvs: vec![leased, kv(b"j", b"w")],
            more: false,
            count: 2,
        };
        let out = s(range(&r, RangeView::default(), false));
        assert!(out.lines().next().unwrap().ends_with("LEASE"), "{out}");
        assert!(out.contains("ff"), "{out}");
    }

    #[test]
    fn put_and_delete() {
        let r = PutResponse {
            header: header(12),
            prev_kv: Some(kv(b"k", b"old")),
        };
        let out = s(put(&r, true, false));
        assert!(out.starts_with("OK (revision 12)\nprevious:\n"), "{out}");
        assert!(out.contains("old"));
        assert_eq!(s(put(&r, false, false)), "OK (revision 12)\n");
        let doc: Value = serde_json::from_slice(&put(&r, false, true)).unwrap();
        assert_eq!(doc["prev_kv"]["value"], "old");

        let d = DeleteResponse {
            header: header(13),
            deleted: 1,
            prev_kvs: vec![],
        };
        assert_eq!(s(delete(&d, false, false)), "deleted 1 key (revision 13)\n");
        let doc: Value = serde_json::from_slice(&delete(&d, false, true)).unwrap();
        assert_eq!(doc["deleted"], 1);
    }

    #[test]
    fn txn_output() {
        let r = TxnResponse {
            header: header(20),
            succeeded: false,
            responses: vec![
                ResponseOp {
                    response: Some(Response::Range(RangeResponse {
                        header: header(20),
                        kvs: vec![kv(b"lock", b"other")],
                        more: false,
                        count: 1,
                    })),
                },
                ResponseOp {
                    response: Some(Response::Put(PutResponse::default())),
                },
            ],
        };
        let out = s(txn(&r, false));
        assert!(out.starts_with("FAILURE"), "{out}");
        assert!(out.contains("[1] get:\nKEY"), "{out}");
        assert!(out.contains("[2] put: OK"), "{out}");
        let doc: Value = serde_json::from_slice(&txn(&r, true)).unwrap();
        assert_eq!(doc["succeeded"], false);
        assert_eq!(doc["responses"][0]["range"]["kvs"][0]["value"], "other");
        assert!(doc["responses"][1]["put"].is_object());
    }

    #[test]
    fn status_table() {
        let up = MemberStatus {
            id: 1,
            addr: "127.0.0.1:7401".into(),
            voter: true,
            reachable: true,
            state: "leader".into(),
            term: 4,
            leader_id: 1,
            last_log_index: 120,
            commit_index: 119,
            applied_index: 118,
            revision: 57,
            ..Default::default()
        };
        let down = MemberStatus {
            id: 3,
            addr: "127.0.0.1:7403".into(),
            voter: false,
            reachable: false,
            error: "connection refused".into(),
            ..Default::default()
        };
        let r = StatusResponse {
            cluster_name: "dev".into(),
            leader_id: 1,
            term: 4,
            answered_by: 1,
            members: vec![down, up],
        };
        let out = s(status(&r, false));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "cluster: dev  leader: 1 (127.0.0.1:7401)  term: 4  answered by: 1"
        );
        for col in [
            "ID", "ADDRESS", "ROLE", "STATE", "TERM", "LEADER", "LAST LOG", "COMMIT", "APPLIED", "REVISION",
        ] {
            assert!(lines[1].contains(col), "{col}: {out}");
        }
        assert!(lines[2].starts_with("1 ") && lines[2].contains("leader"), "{out}");
        assert!(lines[2].contains("voter") && lines[2].ends_with("57"), "{out}");
        assert!(lines[3].contains("learner") && lines[3].contains("unreachable"));
        assert_eq!(lines[4], "unreachable members:");
        assert_eq!(lines[5], "  3 (127.0.0.1:7403): connection refused");

        let doc: Value = serde_json::from_slice(&status(&r, true)).unwrap();
        assert_eq!(doc["cluster_name"], "dev");
        assert_eq!(doc["members"][0]["reachable"], false);
        assert_eq!(doc["members"][1]["commit_index"], 119);

        let none = StatusResponse::default();
        assert!(s(status(&none, false)).starts_with("cluster: -  leader: none"));
    }

    #[test]
    fn member_tables() {
        let r = MemberListResponse {
            members: vec![
                Member {
                    id: 2,
                    addr: "b:2".into(),
                    voter: true,
                },
                Member {
                    id: 1,
                    addr: "a:1".into(),
                    voter: true,
                },
                Member {
                    id: 4,
                    addr: "d:4".into(),
                    voter: false,
                },
            ],
            leader_id: 2,
        };
        let out = s(member_list(&r, false));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("ID") && lines[0].contains("ROLE"));
        assert!(lines[1].starts_with("1 "));
        assert!(lines[2].starts_with("2 ") && lines[2].ends_with('*'), "{out}");
        assert!(lines[3].contains("learner"));
        let doc: Value = serde_json::from_slice(&member_list(&r, true)).unwrap();
        assert_eq!(doc["leader_id"], 2);
        assert_eq!(doc["members"][2]["voter"], false);

        let out = s(member_change("removed member 3", &r.members, false));
        assert!(out.starts_with("removed member 3\nID"), "{out}");
        assert!(!out.contains("LEADER"), "{out}");
    }
}
