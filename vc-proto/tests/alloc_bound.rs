//! Arbitrary bytes never panic the decoder and never make it allocate past the
//! cap.
//!
//! This test binary counts every allocation with its own global allocator. The
//! counters are per thread (tests run on several threads at once), and
//! [`measure`] reports the peak of live bytes that a closure added on the current
//! thread. The decoders run synchronously here: a `FrameReader` over a byte slice
//! never waits, so [`common::ready`] polls it to completion on this thread.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{ready, strategies};
use proptest::collection::vec;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use vc_proto::codec::{self, CodecError, DECODE_LIMIT};
use vc_proto::{
    FrameError, FrameKind, FrameReader, Header, Hello, PodSetup, Request, Response, StreamAttach,
    DEFAULT_MAX_PAYLOAD, HEADER_LEN,
};

thread_local! {
    /// Live bytes allocated by this thread (minus those it freed).
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// Highest value `LIVE` reached since the last reset.
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    // `try_with`: the counters may already be gone while a thread exits.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + bytes as isize;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get() - bytes as isize));
}

/// The system allocator, counting.
struct Counting;

// SAFETY: every method forwards to `System` with the same arguments, so the
// `GlobalAlloc` contract is `System`'s; the counting touches only const-initialised
// thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: forwarded unchanged; `ptr` came from `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Counted as the worst case: both blocks live for a moment.
            grew(new_size);
            shrank(layout.size());
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the peak number of bytes it had
/// allocated at once on this thread (its result included).
fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let result = f();
    let peak = PEAK.with(Cell::get) - base;
    (result, peak.max(0) as usize)
}

/// Room for what is not the decoded value or the payload: error messages,
/// proptest's own bookkeeping never counts (it runs outside `measure`).
const SLACK: usize = 64 * 1024;

/// Decodes `bytes` as `T` and returns the peak allocation of the decode.
fn decode_peak<T: DeserializeOwned>(bytes: &[u8]) -> (Result<T, CodecError>, usize) {
    measure(|| codec::decode::<T>(bytes))
}

fn assert_decode_bounded(bytes: &[u8]) -> Result<(), TestCaseError> {
    let limit = DECODE_LIMIT + SLACK;
    let (_, peak) = decode_peak::<Request>(bytes);
    prop_assert!(peak <= limit, "Request decode peaked at {peak} bytes");
    let (_, peak) = decode_peak::<Response>(bytes);
    prop_assert!(peak <= limit, "Response decode peaked at {peak} bytes");
    let (_, peak) = decode_peak::<Hello>(bytes);
    prop_assert!(peak <= limit, "Hello decode peaked at {peak} bytes");
    let (_, peak) = decode_peak::<StreamAttach>(bytes);
    prop_assert!(peak <= limit, "StreamAttach decode peaked at {peak} bytes");
    let (_, peak) = decode_peak::<PodSetup>(bytes);
    prop_assert!(peak <= limit, "PodSetup decode peaked at {peak} bytes");
    Ok(())
}

/// Reads frames from `bytes` until the first error, decoding each payload as
/// the type its kind names, and returns the frames read, the error, and the
/// peak allocation.
fn read_all(bytes: &[u8]) -> (usize, FrameError, usize) {
    let ((frames, err), peak) = measure(|| {
        let mut reader = FrameReader::new(bytes);
        let mut frames = 0;
        loop {
            let frame = match ready(reader.read_frame()) {
                Ok(frame) => frame,
                Err(err) => return (frames, err),
            };
            frames += 1;
            let decoded = match frame.header.kind {
                FrameKind::Hello => frame.decode::<Hello>(FrameKind::Hello).map(drop),
                FrameKind::Request => frame.decode::<Request>(FrameKind::Request).map(drop),
                FrameKind::Response => frame.decode::<Response>(FrameKind::Response).map(drop),
                FrameKind::StreamAttach => frame
                    .decode::<StreamAttach>(FrameKind::StreamAttach)
                    .map(drop),
                FrameKind::StreamPark => frame
                    .decode::<vc_proto::StreamPark>(FrameKind::StreamPark)
                    .map(drop),
            };
            if let Err(err) = decoded {
                return (frames, err);
            }
        }
    });
    (frames, err, peak)
}

fn header(kind: u8, version: u16, length: u32) -> Vec<u8> {
    let mut bytes = Header {
        version,
        kind: FrameKind::Request,
        id: 1,
        length,
    }
    .encode()
    .to_vec();
    bytes[6] = kind;
    bytes
}

/// Inputs for a `FrameReader`: pure noise, a plausible header (any kind byte,
/// version and length) before noise, a well-formed frame around a noise payload,
/// and well-formed frames of real messages with a few bytes overwritten.
fn framed_input() -> impl Strategy<Value = Vec<u8>> {
    let noise = vec(any::<u8>(), 0..2048);
    let plausible = (
        0u8..6,
        prop_oneof![Just(vc_proto::PROTOCOL_VERSION), any::<u16>()],
        prop_oneof![any::<u32>(), 0u32..4096, Just(DEFAULT_MAX_PAYLOAD)],
        vec(any::<u8>(), 0..2048),
    )
        .prop_map(|(kind, version, length, tail)| {
            let mut bytes = header(kind, version, length);
            bytes.extend(tail);
            bytes
        });
    let well_formed = (1u8..=4, vec(any::<u8>(), 0..2048)).prop_map(|(kind, payload)| {
        let mut bytes = header(kind, vc_proto::PROTOCOL_VERSION, payload.len() as u32);
        bytes.extend(payload);
        bytes
    });
    let mutated = (
        vec(
            prop_oneof![
                strategies::request().prop_map(|r| (FrameKind::Request, codec::encode(&r))),
                strategies::response().prop_map(|r| (FrameKind::Response, codec::encode(&r))),
            ],
            1..4,
        ),
        vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    )
        .prop_map(|(messages, edits)| {
            let mut bytes = Vec::new();
            for (kind, payload) in messages {
                let payload = payload.expect("encodes");
                bytes.extend(header(
                    kind as u8,
                    vc_proto::PROTOCOL_VERSION,
                    payload.len() as u32,
                ));
                bytes.extend(payload);
            }
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            bytes
        });
    prop_oneof![noise, plausible, well_formed, mutated]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_payloads_decode_within_the_cap(bytes in vec(any::<u8>(), 0..4096)) {
        assert_decode_bounded(&bytes)?;
    }

    #[test]
    fn mutated_payloads_decode_within_the_cap(
        request in strategies::request(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = codec::encode(&request).expect("encodes");
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        assert_decode_bounded(&bytes)?;
        assert_decode_bounded(&bytes[..cut.index(bytes.len() + 1)])?;
    }

    #[test]
    fn arbitrary_streams_read_within_the_cap(bytes in framed_input()) {
        let (_, err, peak) = read_all(&bytes);
        prop_assert!(
            peak <= DEFAULT_MAX_PAYLOAD as usize + HEADER_LEN + SLACK,
            "reading peaked at {} bytes, ending with {:?}", peak, err
        );
    }
}

#[test]
fn the_allocator_counts() {
    let (buffer, peak) = measure(|| vec![0u8; 1 << 20]);
    assert!(peak >= 1 << 20, "peak {peak}");
    drop(buffer);
}

#[test]
fn oversized_frames_are_refused_before_any_allocation() {
    for length in [DEFAULT_MAX_PAYLOAD + 1, u32::MAX] {
        let bytes = header(FrameKind::Request as u8, vc_proto::PROTOCOL_VERSION, length);
        let (frames, err, peak) = read_all(&bytes);
        assert_eq!(frames, 0);
        assert!(matches!(err, FrameError::Oversized { .. }), "{err:?}");
        assert!(peak < 1024, "refusing the header allocated {peak} bytes");
    }
}

#[test]
fn a_frame_at_the_cap_allocates_the_cap_once() {
    let bytes = header(
        FrameKind::Request as u8,
        vc_proto::PROTOCOL_VERSION,
        DEFAULT_MAX_PAYLOAD,
    );
    let (_, err, peak) = read_all(&bytes);
    assert!(matches!(err, FrameError::Truncated { .. }), "{err:?}");
    assert!(peak >= DEFAULT_MAX_PAYLOAD as usize, "peak {peak}");
    assert!(peak <= DEFAULT_MAX_PAYLOAD as usize + SLACK, "peak {peak}");
}

/// A payload that fills most of a frame with `count` copies of `element`
/// after `prefix` and a varint `count`, then `suffix`.
fn bomb(prefix: &[u8], element: &[u8], suffix: &[u8]) -> Vec<u8> {
    let room = DEFAULT_MAX_PAYLOAD as usize - prefix.len() - suffix.len() - 5;
    let count = (room / element.len()) as u32;
    let mut bytes = prefix.to_vec();
    bytes.push(252);
    bytes.extend_from_slice(&count.to_le_bytes());
    for _ in 0..count {
        bytes.extend_from_slice(element);
    }
    bytes.extend_from_slice(suffix);
    assert!(bytes.len() <= DEFAULT_MAX_PAYLOAD as usize);
    bytes
}

/// Payloads whose few bytes per element become many bytes of memory.
fn bombs() -> Vec<(&'static str, FrameKind, Vec<u8>)> {
    vec![
        // Response::Routes: 5 bytes (every Option None) -> a 72-byte Route.
        ("routes", FrameKind::Response, bomb(&[10], &[0; 5], &[])),
        // Response::GuestDetails.modules_loaded: 1 byte -> a 24-byte String.
        (
            "module names",
            FrameKind::Response,
            bomb(&[2, 0, 1, 0], &[0], &[0, 0, 0]),
        ),
        // Request::SetupPod dns.search: empty strings.
        (
            "dns search",
            FrameKind::Request,
            bomb(&[3, 0, 0, 0], &[0], &[0, 0, 0, 0, 0, 0]),
        ),
        // Request::CreateContainer user.additional_gids: 1 byte -> a u32.
        (
            "gids",
            FrameKind::Request,
            bomb(&[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[0], &[0; 12]),
        ),
        // Response::Interfaces: 10 bytes -> a 64-byte GuestInterface.
        ("interfaces", FrameKind::Response, bomb(&[9], &[0; 10], &[])),
    ]
}

#[test]
fn amplifying_payloads_stay_within_the_cap() {
    for (name, kind, payload) in bombs() {
        let (result, peak) = match kind {
            FrameKind::Request => {
                let (r, peak) = decode_peak::<Request>(&payload);
                (r.map(drop), peak)
            }
            _ => {
                let (r, peak) = decode_peak::<Response>(&payload);
                (r.map(drop), peak)
            }
        };
        assert!(
            matches!(result, Err(CodecError::TooLarge { .. })),
            "{name}: {result:?}"
        );
        assert!(
            peak <= DECODE_LIMIT + SLACK,
            "{name}: decoding peaked at {peak} bytes"
        );

        // Through a reader: the payload buffer plus the bounded decode.
        let mut frame = header(kind as u8, vc_proto::PROTOCOL_VERSION, payload.len() as u32);
        frame.extend_from_slice(&payload);
        let (frames, err, peak) = read_all(&frame);
        assert_eq!(frames, 1, "{name}");
        assert!(
            matches!(
                err,
                FrameError::Undecodable {
                    source: CodecError::TooLarge { .. },
                    ..
                }
            ),
            "{name}: {err:?}"
        );
        assert!(
            peak <= DEFAULT_MAX_PAYLOAD as usize + DECODE_LIMIT + SLACK,
            "{name}: reading peaked at {peak} bytes"
        );
    }
}

#[test]
fn bombs_are_well_formed_apart_from_their_size() {
    // The same shapes with a handful of elements decode, so the bombs above fail
    // for their size and not for a mistake in how they were built.
    let small = |prefix: &[u8], element: &[u8], suffix: &[u8]| {
        let mut bytes = prefix.to_vec();
        bytes.push(3);
        for _ in 0..3 {
            bytes.extend_from_slice(element);
        }
        bytes.extend_from_slice(suffix);
        bytes
    };
    assert!(codec::decode::<Response>(&small(&[10], &[0; 5], &[])).is_ok());
    assert!(codec::decode::<Response>(&small(&[2, 0, 1, 0], &[0], &[0, 0, 0])).is_ok());
    assert!(codec::decode::<Request>(&small(&[3, 0, 0, 0], &[0], &[0, 0, 0, 0, 0, 0])).is_ok());
    assert!(
        codec::decode::<Request>(&small(&[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[0], &[0; 12]))
            .is_ok()
    );
    assert!(codec::decode::<Response>(&small(&[9], &[0; 10], &[])).is_ok());
}

#[test]
fn realistic_large_messages_fit_the_budget() {
    // A pod with many hosts entries, routes and interfaces still decodes.
    let mut setup = common::pod_setup();
    for i in 0..1000u32 {
        setup.hosts.push(vc_proto::HostEntry {
            ip: common::V4,
            names: vec![format!("host-{i}.example"), format!("alias-{i}")],
        });
        setup.routes.push(common::routes()[0].clone());
    }
    let request = Request::SetupPod(setup);
    let bytes = codec::encode(&request).expect("encodes");
    let (back, peak) = decode_peak::<Request>(&bytes);
    assert_eq!(back.expect("decodes"), request);
    assert!(peak <= DECODE_LIMIT, "peak {peak}");
}
