//! Task events to containerd, through the publisher containerd's `start`
//! handed the shim (its ttrpc events service). Events queue in order; the
//! publisher retries a failed forward a few times.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim::event::Event;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::context::with_duration;
use containerd_shim::publisher::RemotePublisher;
use tracing::{debug, warn};

/// How long one forward to containerd may take.
const FORWARD_DEADLINE: Duration = Duration::from_secs(5);

/// Where the service sends its events.
#[derive(Clone)]
pub struct Events {
    publisher: Arc<RemotePublisher>,
    namespace: String,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("address", &self.publisher.address)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Events {
    /// Events of `namespace` through `publisher`.
    pub fn new(publisher: RemotePublisher, namespace: String) -> Self {
        Events {
            publisher: Arc::new(publisher),
            namespace,
        }
    }

    /// Queues one event (a failure is logged: an event is never worth
    /// failing the call that caused it).
    pub async fn publish<E: Event + MessageDyn>(&self, event: E) {
        let topic = event.topic();
        debug!(topic = %topic, "publishing event");
        if let Err(e) = self
            .publisher
            .publish(
                with_duration(FORWARD_DEADLINE),
                &topic,
                &self.namespace,
                Box::new(event),
            )
            .await
        {
            warn!(topic = %topic, error = %e, "cannot publish an event");
        }
    }
}

/// A protobuf timestamp.
pub fn timestamp(at: SystemTime) -> Timestamp {
    let d = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut t = Timestamp::new();
    t.seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    t.nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_seconds_and_nanos() {
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let t = timestamp(at);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_456_789));
    }
}
