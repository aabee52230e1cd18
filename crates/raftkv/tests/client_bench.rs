//! `raftkv bench --local --count`: a short smoke run against a local 3-process cluster.

use raftkv::bench::{self, BenchArgs, BenchMode};
use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_local_count_runs_every_mode_without_errors() {
    let json = tempfile::NamedTempFile::new().expect("temp file");
    let args = BenchArgs {
        local: true,
        clients: vec![1, 8],
        modes: vec![
            BenchMode::Set,
            BenchMode::Get,
            BenchMode::Empty,
            BenchMode::Ping,
        ],
        count: Some(200),
        keys: 1_000,
        json: Some(json.path().to_path_buf()),
        label: "smoke".to_owned(),
        server_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_raftkv"))),
        ..BenchArgs::default()
    };
    let report = match bench::run(args).await {
        Ok(report) => report,
        Err(error) => panic!("bench failed: {error}"),
    };
    assert_eq!(report.rows.len(), 8);
    for row in &report.rows {
        assert_eq!(row.errors, 0, "{row:?}");
        assert_eq!(row.ops, 200, "{row:?}");
        assert!(
            row.ops_per_s > 0.0 && row.p50_us > 0.0 && row.p99_us >= row.p50_us,
            "{row:?}"
        );
    }
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json.path()).expect("json written"))
            .expect("valid json");
    assert_eq!(written["label"], "smoke");
    assert_eq!(written["rows"].as_array().map(Vec::len), Some(8));
    assert!(report.markdown().starts_with("| mode | clients | ops/s"));
}
