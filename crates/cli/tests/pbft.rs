//! `--algorithm pbft` end to end: the demo's tour on four PBFT replicas (f = 1), the primary
//! cut off alone, and every claim of the tour holding.

mod common;

use common::{concord, stderr, stdout};

#[test]
fn demo_cuts_off_the_pbft_primary_and_every_claim_holds() {
    let output = concord(&["demo", "--algorithm", "pbft", "--json"]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let tour: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(tour["algorithm"], "pbft");
    let primary = tour["initial"]["leader"].as_u64().expect("a primary");
    assert_eq!(tour["initial"]["followers"].as_array().unwrap().len(), 3);
    assert_eq!(tour["minority"], serde_json::json!([primary]));
    assert_eq!(tour["majority"].as_array().unwrap().len(), 3);
    let sides = tour["effects"]["sides"].as_array().unwrap();
    let rest = sides
        .iter()
        .find(|s| s["nodes"] == tour["majority"])
        .expect("the majority side");
    let new_primary = rest["leaders"][0]["node"].as_u64().unwrap();
    assert_ne!(
        new_primary, primary,
        "a view change on the majority side: {rest}"
    );
    assert!(rest["requests_ok"].as_u64().unwrap() > 0, "{rest}");
    assert_eq!(tour["after_heal"]["nodes_up"], 4);
    assert_eq!(tour["linearizability"]["verdict"], "linearizable");
    for expectation in tour["expectations"].as_array().unwrap() {
        assert_eq!(expectation["held"], true, "{expectation}");
    }
}

#[test]
fn demo_names_pbft_and_its_terms() {
    let output = concord(&["demo", "--algorithm", "pbft"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for needle in [
        "a 4-node PBFT cluster",
        "the primary",
        "the view",
        "is cut off",
    ] {
        assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
    }
}
