//! The server's configuration file: `raftkv::config::RawConfig::from_toml` on the input as
//! text, then `validate` (every check, addresses parsed; in fuzzing builds no name but
//! `localhost` is resolved, so no DNS query leaves the process), then the runtime configuration
//! derived from it (`ServerConfig::node_config`).
//!
//! Checks, beyond "no panic": a parsed file written back as TOML parses to the same settings,
//! which validate the same way; a file merged over itself is unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftengine_fuzz as _;
use raftkv::config::RawConfig;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(raw) = RawConfig::from_toml(&text) else {
        return;
    };
    assert_eq!(raw.clone().merge(raw.clone()), raw);
    assert_eq!(RawConfig::default().merge(raw.clone()), raw);
    let validated = raw.validate();
    if let Ok(config) = &validated {
        let _ = config.node_config();
        assert!(config.me().is_some(), "a valid config names this node");
    }
    // Values TOML cannot hold (an integer above i64::MAX) do not serialize: nothing to compare.
    if let Ok(written) = toml::to_string(&raw) {
        let reparsed = RawConfig::from_toml(&written).expect("a written config parses");
        assert_eq!(reparsed, raw, "TOML round trip of\n{written}");
        assert_eq!(
            reparsed.validate().map_err(|e| e.to_string()),
            validated.map_err(|e| e.to_string())
        );
    }
});
