//! Arbitrary text as a config file: parsing, validation and error reporting must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = remora_config::load_str("fuzz.yaml", &text) {
        // What loads must survive a round trip through the effective-config printer.
        let again = remora_config::to_yaml(&config);
        assert!(remora_config::load_str("fuzz.yaml", &again).is_ok());
    }
});
