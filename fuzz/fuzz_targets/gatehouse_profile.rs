#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gatehouse_client::fuzzing::gatehouse_profile(data);
});
