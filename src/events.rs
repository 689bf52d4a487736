//! What just happened, as a stream: publications, backends joining and leaving, refusals.
//!
//! The status ([`crate::status`]) says how things *are*; events say what *changed*, once, when
//! it changed. [`BalancerHandle::events`](crate::BalancerHandle::events) gives a stream of
//! them to each subscriber. A subscriber that falls more than [`EVENT_BUFFER`] events behind
//! gets [`Event::Missed`] in place of the ones it missed (the status is always complete).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream};
use tokio::sync::broadcast;

use crate::net::TransferError;
use crate::onion::OnionAddress;

/// Events kept for a subscriber that is slow to read them.
pub const EVENT_BUFFER: usize = 1024;

/// Something that happened to a frontend service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// An HSDir accepted a new revision of the frontend's descriptor for a time period: from
    /// now on clients that fetch it there get the current intro points. Sent once per
    /// (period, revision), for the first HSDir that accepts it.
    Published {
        /// The frontend.
        service: OnionAddress,
        /// The time period (its number).
        time_period: u64,
        /// The revision counter of the descriptor.
        revision: u64,
    },
    /// A backend's intro points became available to publish: its first valid descriptor
    /// arrived, or it came back after it had left.
    BackendJoined {
        /// The frontend.
        service: OnionAddress,
        /// The backend's name in the config.
        name: String,
        /// The backend's address.
        instance: OnionAddress,
    },
    /// A backend's intro points are no longer available to publish: it has no valid
    /// descriptor for any period we publish (it expired, went stale, was not found, or the
    /// backend was removed from the config), or health checks, a drain or the application's
    /// signal took it out. New descriptors leave it out.
    BackendLeft {
        /// The frontend.
        service: OnionAddress,
        /// The backend's name in the config.
        name: String,
        /// The backend's address.
        instance: OnionAddress,
    },
    /// An HSDir refused to store our descriptor (HTTP 400). The upload is retried with
    /// backoff; many in a row usually mean a clock problem or another publisher of the same
    /// key.
    UploadRejected {
        /// The frontend.
        service: OnionAddress,
        /// The time period (its number).
        time_period: u64,
        /// The revision counter that was refused.
        revision: u64,
        /// The HSDir's RSA identity (hex, as C tor names relays).
        hsdir: String,
        /// Refusals by this HSDir in a row, this one included.
        in_a_row: u32,
        /// What the HSDir said.
        error: Arc<TransferError>,
    },
    /// Health checks found a backend down (its probes failed `down-after` times in a row),
    /// or the embedding application said so: it leaves every descriptor (unless every
    /// backend is down: see [`Event::FailOpen`]).
    BackendDown {
        /// The frontend.
        service: OnionAddress,
        /// The backend's name in the config.
        name: String,
        /// The backend's address.
        instance: OnionAddress,
        /// Why: the last probe's failure, or the application's reason.
        reason: String,
    },
    /// A backend found down is up again (its probes passed `up-after` times in a row, or
    /// the application said so): it returns to the descriptors.
    BackendUp {
        /// The frontend.
        service: OnionAddress,
        /// The backend's name in the config.
        name: String,
        /// The backend's address.
        instance: OnionAddress,
    },
    /// The operator drained a backend (`drain: true`, applied by a reload), or undrained it.
    BackendDraining {
        /// The frontend.
        service: OnionAddress,
        /// The backend's name in the config.
        name: String,
        /// The backend's address.
        instance: OnionAddress,
        /// True when drained, false when put back.
        draining: bool,
    },
    /// Every backend with a descriptor is down or drained, so all stay listed rather than
    /// none (`active: true`), or that ended (`active: false`).
    FailOpen {
        /// The frontend.
        service: OnionAddress,
        /// Whether the service now fails open.
        active: bool,
    },
    /// This subscriber read too slowly and missed `count` events.
    Missed {
        /// How many.
        count: u64,
    },
}

/// The sending side, shared by every service runner of a balancer.
#[derive(Debug, Clone)]
pub(crate) struct EventSender {
    /// The channel; events sent while nobody listens are dropped.
    sender: broadcast::Sender<Event>,
}

impl EventSender {
    /// A channel with room for [`EVENT_BUFFER`] unread events per subscriber.
    pub(crate) fn new() -> Self {
        EventSender {
            sender: broadcast::Sender::new(EVENT_BUFFER),
        }
    }

    /// Sends `event` to every current subscriber.
    pub(crate) fn send(&self, event: Event) {
        // An error only means nobody is subscribed, which is fine.
        let _ = self.sender.send(event);
    }

    /// A stream of the events sent from now on.
    pub(crate) fn subscribe(&self) -> EventStream {
        let receiver = self.sender.subscribe();
        let inner = futures::stream::unfold(receiver, |mut receiver| async move {
            let event = match receiver.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(count)) => Event::Missed { count },
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((event, receiver))
        });
        EventStream {
            inner: Box::pin(inner),
        }
    }
}

/// The events of a balancer, from the moment of subscription. Ends when the balancer's
/// handle is dropped or shut down.
pub struct EventStream {
    /// The receiver, as a stream.
    inner: BoxStream<'static, Event>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    fn address() -> OnionAddress {
        OnionAddress::from_public_key(
            &tor_llcrypto::pk::ed25519::Keypair::generate(&mut rand::rng()).verifying_key(),
        )
    }

    /// A slow subscriber is told how many events it missed, then gets the newest ones.
    #[tokio::test]
    async fn slow_subscriber_is_told_what_it_missed() {
        let sender = EventSender::new();
        let mut stream = sender.subscribe();
        let service = address();
        for revision in 0..(EVENT_BUFFER as u64 + 5) {
            sender.send(Event::Published {
                service,
                time_period: 1,
                revision,
            });
        }
        match stream.next().await {
            Some(Event::Missed { count }) => assert_eq!(count, 5),
            other => panic!("expected Missed, got {other:?}"),
        }
        match stream.next().await {
            Some(Event::Published { revision, .. }) => assert_eq!(revision, 5),
            other => panic!("expected the oldest kept event, got {other:?}"),
        }
    }

    /// The stream ends when the last sender is gone (the balancer stopped).
    #[tokio::test]
    async fn stream_ends_with_the_balancer() {
        let sender = EventSender::new();
        let mut stream = sender.subscribe();
        drop(sender);
        assert!(stream.next().await.is_none());
    }
}
