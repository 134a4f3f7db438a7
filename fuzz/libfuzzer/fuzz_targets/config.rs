//! libFuzzer entry of the `config` target; the body is `vc_fuzz::TARGETS`'s.

#![no_main]

#[global_allocator]
static ALLOC: vc_fuzz::alloc::Tracking = vc_fuzz::alloc::Tracking;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vc_fuzz::target("config").expect("a known target").run(data);
});
