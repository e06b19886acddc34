//! Arbitrary bytes as an HTTP/1.1 request head: framing scan, parse, limits, routing, rewrites.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    remora_proxy::fuzzing::request_head(data);
});
