//! The event queue behind `NextEvent`: process exits (pushed by the reaper) and
//! OOM kills (pushed by the container supervision through an [`EventSink`]).
//!
//! The queue is bounded: when nobody asks for events it keeps the newest
//! [`QUEUE_CAPACITY`] and drops the oldest, with a warning, so that memory stays
//! flat. Each event goes to one `NextEvent` caller.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use vc_proto::Event;

/// Most events kept while nobody waits for them.
pub const QUEUE_CAPACITY: usize = 1024;

/// The queue. Shared as `Arc<Events>`.
#[derive(Debug, Default)]
pub struct Events {
    queue: Mutex<VecDeque<Event>>,
    ready: Notify,
}

impl Events {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Appends an event, dropping the oldest when full.
    pub fn push(&self, event: Event) {
        {
            let mut queue = self.queue.lock().expect("event queue lock poisoned");
            if queue.len() >= QUEUE_CAPACITY {
                let dropped = queue.pop_front();
                tracing::warn!(?dropped, "event queue full: oldest event dropped");
            }
            queue.push_back(event);
        }
        self.ready.notify_one();
    }

    /// Waits for the next event and takes it off the queue. Cancel-safe: an event
    /// is only taken when it is returned.
    pub async fn next(&self) -> Event {
        loop {
            let notified = self.ready.notified();
            if let Some(event) = self
                .queue
                .lock()
                .expect("event queue lock poisoned")
                .pop_front()
            {
                // More may be queued: pass the wake-up on to another waiter.
                self.ready.notify_one();
                return event;
            }
            notified.await;
        }
    }

    /// A handle to push events with, for other modules.
    pub fn sink(self: &Arc<Self>) -> EventSink {
        EventSink(Arc::clone(self))
    }
}

/// A cloneable handle that pushes events into the agent's queue.
#[derive(Debug, Clone)]
pub struct EventSink(Arc<Events>);

impl EventSink {
    /// Reports that the kernel OOM-killed a process of `container_id`.
    pub fn oom(&self, container_id: &str) {
        self.0.push(Event::Oom {
            container_id: container_id.to_owned(),
        });
    }

    /// Pushes any event.
    pub fn push(&self, event: Event) {
        self.0.push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fifo_and_waits() {
        let events = Events::new();
        events.sink().oom("a");
        events.sink().oom("b");
        assert_eq!(
            events.next().await,
            Event::Oom {
                container_id: "a".into()
            }
        );
        assert_eq!(
            events.next().await,
            Event::Oom {
                container_id: "b".into()
            }
        );
        let waiter = {
            let events = Arc::clone(&events);
            tokio::spawn(async move { events.next().await })
        };
        tokio::task::yield_now().await;
        events.sink().oom("c");
        assert_eq!(
            waiter.await.expect("joined"),
            Event::Oom {
                container_id: "c".into()
            }
        );
    }

    #[test]
    fn bounded() {
        let events = Events::new();
        for i in 0..QUEUE_CAPACITY + 10 {
            events.sink().oom(&i.to_string());
        }
        let queue = events.queue.lock().expect("lock");
        assert_eq!(queue.len(), QUEUE_CAPACITY);
        assert_eq!(
            queue.front(),
            Some(&Event::Oom {
                container_id: "10".into()
            })
        );
    }
}
