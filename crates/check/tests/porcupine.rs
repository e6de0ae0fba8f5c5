//! Acceptance: every history of Porcupine's test data gets its known verdict.
//!
//! The data lives in `shared/data/porcupine` beside the repository (see its README); set
//! `CONCORD_PORCUPINE_DATA` to point elsewhere.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::Duration;

use concord_check::{
    check_linearizability, read_edn, read_jepsen_log, RegisterModel, StringKvModel, Verdict,
};

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("CONCORD_PORCUPINE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/porcupine")
        });
    assert!(
        dir.join("verdicts.tsv").exists(),
        "Porcupine test data not found at {} (set CONCORD_PORCUPINE_DATA)",
        dir.display()
    );
    dir
}

#[test]
fn every_porcupine_history_gets_its_known_verdict() {
    let dir = data_dir();
    let verdicts = std::fs::read_to_string(dir.join("verdicts.tsv")).unwrap();
    let mut checked = 0;
    for line in verdicts.lines().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [file, model, expected] = fields[..] else {
            panic!("bad verdicts line {line}")
        };
        if model == "kv-unpartitioned" {
            // Ten keys checked as one object: seconds each, for the checker's benchmark.
            continue;
        }
        let path = dir.join(file);
        let reader = BufReader::new(File::open(&path).unwrap());
        let budget = Some(Duration::from_secs(60));
        let report = match model {
            "cas-register" => {
                check_linearizability(&read_jepsen_log(reader).unwrap(), &RegisterModel, budget)
            }
            "kv" => check_linearizability(&read_edn(reader).unwrap(), &StringKvModel, budget),
            other => panic!("unknown model {other}"),
        }
        .unwrap();
        let got = match report.verdict {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable(_) => "not-linearizable",
            Verdict::Unknown { .. } => "unknown",
        };
        assert_eq!(got, expected, "{file} ({model})");
        checked += 1;
    }
    assert_eq!(
        checked,
        102 + 6,
        "every history in verdicts.tsv was checked"
    );
}
