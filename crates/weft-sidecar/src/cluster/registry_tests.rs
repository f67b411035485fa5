//! Registry answers over synthetic placement tables.

use super::*;
use weft_placement::proto::placement::{HostInfo, Table};

const APP: &str = "app";

fn host(id: &str, app: &str, registered: bool) -> HostInfo {
    let actor_types = if registered {
        ActorKind::ALL.iter().map(|k| actor_type(app, *k)).collect()
    } else {
        vec![]
    };
    HostInfo {
        host_id: id.into(),
        address: format!("{id}.internal:50002"),
        app_id: app.into(),
        actor_types,
        weight: 1,
        zone: String::new(),
    }
}

fn table(version: u64, hosts: Vec<HostInfo>) -> Arc<PlacementTable> {
    cluster_table("", version, hosts)
}

fn cluster_table(cluster_id: &str, version: u64, hosts: Vec<HostInfo>) -> Arc<PlacementTable> {
    PlacementTable::from_proto(Table {
        version,
        hosts,
        vnodes_per_host: 100,
        cluster_id: cluster_id.into(),
    })
    .unwrap()
}

#[test]
fn a_table_of_another_placement_cluster_is_applied_whatever_its_version() {
    let r = Registry::placed("a");
    r.apply(cluster_table(
        "old",
        7,
        vec![host("a", APP, true), host("b", APP, true)],
    ));
    r.apply(cluster_table("old", 6, vec![host("a", APP, true)]));
    assert_eq!(
        r.version(),
        7,
        "an older version of the same cluster is ignored"
    );
    // Placement lost its data: a new cluster, versions from 1 again.
    r.apply(cluster_table("new", 2, vec![host("a", APP, true)]));
    assert_eq!(r.version(), 2);
    assert_eq!(
        r.owned_buckets(APP, ActorKind::Workflow).len(),
        BUCKETS as usize
    );
    r.apply(cluster_table(
        "new",
        2,
        vec![host("a", APP, true), host("b", APP, true)],
    ));
    assert_eq!(
        r.owned_buckets(APP, ActorKind::Workflow).len(),
        BUCKETS as usize,
        "a resend"
    );
}

#[test]
fn local_only_owns_everything() {
    let r = Registry::local_only("solo");
    assert_eq!(r.host_id(), "solo");
    assert_eq!(r.owner(APP, ActorKind::Workflow, "x"), Owner::Local);
    assert_eq!(
        r.owned_buckets(APP, ActorKind::Activity).len(),
        BUCKETS as usize
    );
    r.apply(table(5, vec![host("other", APP, true)]));
    assert_eq!(r.owner(APP, ActorKind::Workflow, "x"), Owner::Local);
    assert_eq!(r.version(), 0);
}

#[test]
fn nobody_before_a_table_or_without_registered_types() {
    let r = Registry::placed("a");
    assert_eq!(r.owner(APP, ActorKind::Workflow, "x"), Owner::Nobody);
    assert!(r.owned_buckets(APP, ActorKind::Workflow).is_empty());
    assert_eq!(r.version(), 0);
    r.apply(table(1, vec![host("a", APP, false)]));
    assert_eq!(r.version(), 1);
    assert_eq!(r.owner(APP, ActorKind::Workflow, "x"), Owner::Nobody);
    assert!(r.owned_buckets(APP, ActorKind::Workflow).is_empty());
    // Another app's hosts never own this app's keys.
    r.apply(table(
        2,
        vec![host("a", APP, false), host("b", "other", true)],
    ));
    assert_eq!(r.owner(APP, ActorKind::Workflow, "x"), Owner::Nobody);
}

#[test]
fn two_hosts_partition_the_buckets() {
    let a = Registry::placed("a");
    let b = Registry::placed("b");
    let t = table(3, vec![host("a", APP, true), host("b", APP, true)]);
    a.apply(t.clone());
    b.apply(t);
    let ma = a.owned_buckets(APP, ActorKind::Workflow);
    let mb = b.owned_buckets(APP, ActorKind::Workflow);
    assert_eq!(ma.len() + mb.len(), BUCKETS as usize);
    assert!(ma.iter().all(|x| !mb.contains(x)));
    // Both get a fair share (100 virtual nodes each).
    assert!(
        ma.len() > 1200 && mb.len() > 1200,
        "{} / {}",
        ma.len(),
        mb.len()
    );
    for i in 0..500 {
        let key = format!("wf-{i}");
        let bucket = bucket_of(&key);
        match a.owner(APP, ActorKind::Workflow, &key) {
            Owner::Local => {
                assert!(ma.binary_search(&bucket).is_ok());
                assert_eq!(
                    b.owner(APP, ActorKind::Workflow, &key),
                    Owner::Remote {
                        host_id: "a".into(),
                        address: "a.internal:50002".into()
                    }
                );
            }
            Owner::Remote { host_id, address } => {
                assert_eq!(
                    (host_id.as_str(), address.as_str()),
                    ("b", "b.internal:50002")
                );
                assert!(mb.binary_search(&bucket).is_ok());
                assert_eq!(b.owner(APP, ActorKind::Workflow, &key), Owner::Local);
            }
            Owner::Nobody => panic!("every key has an owner"),
        }
    }
}

#[test]
fn activities_and_executors_live_with_their_workflow() {
    let a = Registry::placed("a");
    a.apply(table(
        1,
        vec![
            host("a", APP, true),
            host("b", APP, true),
            host("c", APP, true),
        ],
    ));
    for i in 0..300 {
        let id = format!("order-{i}");
        let wf = a.owner(APP, ActorKind::Workflow, &id);
        assert_eq!(a.owner(APP, ActorKind::Executor, &id), wf);
        let act = activity_key(&id, i, 2);
        assert_eq!(a.owner(APP, ActorKind::Activity, &act), wf);
    }
}

#[test]
fn activity_keys_parse_from_the_right() {
    assert_eq!(instance_of_key("abc::4::0"), "abc");
    assert_eq!(instance_of_key("a::b::4::10"), "a::b");
    assert_eq!(instance_of_key("plain"), "plain");
    assert_eq!(instance_of_key("x::y::z"), "x::y::z");
    assert_eq!(instance_of_key("x::1"), "x::1");
}

#[test]
fn a_joining_host_takes_buckets_only_for_itself() {
    let a = Registry::placed("a");
    a.apply(table(1, vec![host("a", APP, true), host("b", APP, true)]));
    let before: Vec<Owner> = (0..i32::from(BUCKETS))
        .map(|b| a.bucket_owner(APP, ActorKind::Workflow, b))
        .collect();
    a.apply(table(
        2,
        vec![
            host("a", APP, true),
            host("b", APP, true),
            host("c", APP, true),
        ],
    ));
    let mut moved = 0;
    for (b, old) in before.iter().enumerate() {
        let new = a.bucket_owner(APP, ActorKind::Workflow, b as i32);
        if &new != old {
            moved += 1;
            assert!(
                matches!(&new, Owner::Remote { host_id, .. } if host_id == "c"),
                "bucket {b} moved from {old:?} to {new:?}"
            );
        }
    }
    // About a third of the buckets move, all to the newcomer.
    assert!(moved > 900 && moved < 1900, "{moved} moved");
}

#[test]
fn stale_tables_are_ignored_and_changes_are_announced() {
    let r = Registry::placed("a");
    let mut rx = r.watch();
    r.apply(table(4, vec![host("a", APP, true)]));
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 4);
    assert_eq!(r.owner(APP, ActorKind::Workflow, "k"), Owner::Local);
    r.apply(table(3, vec![host("b", APP, true)]));
    assert_eq!(r.version(), 4);
    assert!(!rx.has_changed().unwrap());
    assert_eq!(r.owner(APP, ActorKind::Workflow, "k"), Owner::Local);
    r.apply(table(5, vec![host("b", APP, true)]));
    assert_eq!(*rx.borrow_and_update(), 5);
    assert!(r.owned_buckets(APP, ActorKind::Workflow).is_empty());
}
