//! libFuzzer entry of the `procfs` target; the body is `vc_fuzz::TARGETS`'s.

#![no_main]

#[global_allocator]
static ALLOC: vc_fuzz::alloc::Tracking = vc_fuzz::alloc::Tracking;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vc_fuzz::target("procfs").expect("a known target").run(data);
});
