//! Property tests: encode then decode is the identity for generated messages,
//! through the codec and through frames, and no strict prefix of an encoding
//! decodes.

mod common;

use std::fmt::Debug;

use common::{ready, strategies};
use proptest::collection::vec;
use proptest::prelude::*;
use serde::{de::DeserializeOwned, Serialize};
use vc_proto::{codec, FrameKind, FrameReader, FrameWriter, Request, Response};

fn identity<T: Serialize + DeserializeOwned + PartialEq + Debug>(
    value: &T,
) -> Result<(), TestCaseError> {
    let bytes = codec::encode(value).expect("encodes");
    let back: T = codec::decode(&bytes).expect("decodes");
    prop_assert_eq!(&back, value);
    // Decoding reads the same bytes in the same order, so a prefix runs out.
    for cut in 0..bytes.len() {
        prop_assert!(codec::decode::<T>(&bytes[..cut]).is_err(), "prefix {cut}");
    }
    Ok(())
}

proptest! {
    #[test]
    fn requests_roundtrip(request in strategies::request()) {
        identity(&request)?;
    }

    #[test]
    fn responses_roundtrip(response in strategies::response()) {
        identity(&response)?;
    }

    #[test]
    fn nested_types_roundtrip(
        setup in strategies::pod_setup(),
        spec in strategies::container_spec(),
        attach in strategies::stream_attach(),
        park in strategies::stream_park(),
        event in strategies::event(),
        hello in strategies::hello(),
    ) {
        identity(&setup)?;
        identity(&spec)?;
        identity(&attach)?;
        identity(&park)?;
        identity(&event)?;
        identity(&hello)?;
    }

    #[test]
    fn frame_streams_roundtrip(
        requests in vec((any::<u64>(), strategies::request()), 0..6),
        responses in vec((any::<u64>(), strategies::response()), 0..6),
    ) {
        let mut writer = FrameWriter::new(Vec::new());
        for (id, request) in &requests {
            ready(writer.write_message(FrameKind::Request, *id, request)).expect("writes");
        }
        for (id, response) in &responses {
            ready(writer.write_message(FrameKind::Response, *id, response)).expect("writes");
        }
        let bytes = writer.into_inner();
        let mut reader = FrameReader::new(&bytes[..]);
        for (id, request) in &requests {
            let got = ready(reader.read_message::<Request>(FrameKind::Request)).expect("reads");
            prop_assert_eq!(&got, &(*id, request.clone()));
        }
        for (id, response) in &responses {
            let got = ready(reader.read_message::<Response>(FrameKind::Response)).expect("reads");
            prop_assert_eq!(&got, &(*id, response.clone()));
        }
        let end = ready(reader.read_frame()).expect_err("end of stream");
        prop_assert!(end.is_clean_eof(), "{:?}", end);
    }
}
