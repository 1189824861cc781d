//! The config file (`--config FILE`, TOML): whatever its text, loading answers a config that
//! passed validation or an error, never a panic; an accepted config renders back to TOML
//! that loads to the same config.
#![no_main]

use habitd::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text) else {
        return;
    };
    // `Config::load` goes through this same serialisation when flags override a file.
    let rendered = match toml::to_string(&config) {
        Ok(t) => t,
        Err(e) => panic!("an accepted config does not serialise: {e}"),
    };
    match Config::parse(&rendered) {
        Ok(back) => assert_eq!(back, config, "a config reads back different:\n{rendered}"),
        Err(e) => panic!("an accepted config renders to a refused one: {e:#}\n{rendered}"),
    }
});
