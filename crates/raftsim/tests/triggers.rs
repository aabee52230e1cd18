//! Schedules stop right after the move that satisfies their trigger.

use raftsim::{Cluster, ClusterSettings, Trigger};

fn elected_at_n1_pumping_until(trigger: Trigger) -> Cluster {
    let mut c = Cluster::new(&ClusterSettings::default()).expect("default settings are valid");
    c.campaign(1, false).expect("N-1 is up");
    c.pump(Some(&trigger)).expect("trigger is reached");
    c
}

#[test]
fn pump_until_leader_stops_before_the_term_start_entry_is_replicated() {
    let c = elected_at_n1_pumping_until(Trigger::IsLeader(1));
    let n2 = c.status(2).unwrap().unwrap();
    assert_eq!(n2.last_index.0, 0, "pump overshot the trigger");
}

#[test]
fn pump_until_sent_stops_at_that_send() {
    let trigger = Trigger::Sent {
        code: "poll".into(),
        from: Some(1),
        to: Some(2),
    };
    let c = elected_at_n1_pumping_until(trigger);
    assert_eq!(
        c.queued(2).unwrap().0,
        1,
        "the poll waits in N-2's inbound queue"
    );
}

#[test]
fn run_until_handled_fires_even_when_the_handler_replies() {
    let mut c = Cluster::new(&ClusterSettings::default()).unwrap();
    c.campaign(1, false).unwrap();
    let trigger = Trigger::Handled {
        code: "p_v_r".into(),
        by: Some(2),
        from: None,
    };
    c.run(Some(&trigger))
        .expect("N-2 handles the pre-vote request");
    assert_eq!(
        c.queued(2).unwrap().1,
        1,
        "N-2's answer is queued, not yet forwarded"
    );
}
