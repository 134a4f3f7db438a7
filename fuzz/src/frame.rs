//! `decode_frame`: everything that reads bytes from a peer, without a
//! connection: a [`FrameReader`] over the bytes (header checks, payload reads,
//! and decoding each payload as the type its kind names), and the payload
//! codec for every message type. Whatever decodes must survive an
//! encode/decode round trip unchanged.

use std::fmt::Debug;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde::{de::DeserializeOwned, Serialize};
use vc_proto::{
    codec, FrameKind, FrameReader, Hello, PodSetup, Request, Response, StreamAttach, StreamPark,
};

/// Runs a future that never waits (a reader over a byte slice) to completion.
pub(crate) fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a reader over a byte slice returned Pending"),
    }
}

/// A decoded value encodes, and that encoding decodes to the same value.
pub(crate) fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let bytes = codec::encode(value).expect("a decoded value encodes");
    let back: T = codec::decode(&bytes).expect("an encoded value decodes");
    assert_eq!(&back, value, "the codec round trip changed the value");
}

fn payload<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
    if let Ok(value) = codec::decode::<T>(bytes) {
        round_trip(&value);
    }
}

pub(crate) fn decode_frame(data: &[u8]) {
    let mut reader = FrameReader::new(data);
    while let Ok(frame) = ready(reader.read_frame()) {
        assert_eq!(frame.payload.len(), frame.header.length as usize);
        match frame.header.kind {
            FrameKind::Hello => frame
                .decode::<Hello>(FrameKind::Hello)
                .map(|v| round_trip(&v)),
            FrameKind::Request => frame
                .decode::<Request>(FrameKind::Request)
                .map(|v| round_trip(&v)),
            FrameKind::Response => frame
                .decode::<Response>(FrameKind::Response)
                .map(|v| round_trip(&v)),
            FrameKind::StreamAttach => frame
                .decode::<StreamAttach>(FrameKind::StreamAttach)
                .map(|v| round_trip(&v)),
            FrameKind::StreamPark => frame
                .decode::<StreamPark>(FrameKind::StreamPark)
                .map(|v| round_trip(&v)),
        }
        .ok();
    }

    payload::<Request>(data);
    payload::<Response>(data);
    payload::<Hello>(data);
    payload::<StreamAttach>(data);
    payload::<StreamPark>(data);
    payload::<PodSetup>(data);
}
