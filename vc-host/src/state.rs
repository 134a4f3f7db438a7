//! The lifecycle states of pods and containers, and the transitions allowed
//! between them (as in virtcontainers).
//!
//! ```text
//!            start            pause
//!   Ready ----------> Running -------> Paused
//!     |                 |   ^------------'  resume
//!     |                 | stop (or the process/VM exits)
//!     |                 v
//!     '-------------> Stopped ---> (deleted)
//!          stop            ^
//!                          | stop (or delete)
//!   Running/Paused ---> Broken   (QEMU or a helper died)
//! ```
//!
//! Delete is allowed from `Ready`, `Stopped` and `Broken` only. Only pods
//! become `Broken`.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// State of a pod or a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Created; for a pod, its VM is not running; for a container, its process
    /// is not started.
    Ready,
    /// The VM or the container's process runs.
    Running,
    /// Frozen.
    Paused,
    /// Stopped, or found dead.
    Stopped,
    /// A pod whose QEMU or one of its helper processes died while it ran;
    /// the pod's record says which and how. Stop or delete cleans it up.
    Broken,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Ready => "ready",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::Broken => "broken",
        })
    }
}

/// An operation that moves a pod or container between states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// Ready -> Running.
    Start,
    /// Running -> Paused.
    Pause,
    /// Paused -> Running.
    Resume,
    /// Ready, Running, Paused or Broken -> Stopped.
    Stop,
    /// Ready, Stopped or Broken -> gone.
    Delete,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transition::Start => "start",
            Transition::Pause => "pause",
            Transition::Resume => "resume",
            Transition::Stop => "stop",
            Transition::Delete => "delete",
        })
    }
}

/// A transition that the current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot {transition} a {what} that is {from}; it must be {}", allowed_from(*.transition))]
pub struct TransitionError {
    /// `pod` or `container`.
    pub what: &'static str,
    /// The operation.
    pub transition: Transition,
    /// The state the object was in.
    pub from: State,
}

fn allowed_from(t: Transition) -> &'static str {
    match t {
        Transition::Start => "ready",
        Transition::Pause => "running",
        Transition::Resume => "paused",
        Transition::Stop => "ready, running, paused or broken",
        Transition::Delete => "ready, stopped or broken",
    }
}

impl State {
    /// The state after `transition`, or an error naming both states.
    /// `Delete` leaves the state as it is (the object goes away).
    pub fn apply(
        self,
        what: &'static str,
        transition: Transition,
    ) -> Result<State, TransitionError> {
        use State::*;
        use Transition::*;
        let next = match (self, transition) {
            (Ready, Start) => Running,
            (Running, Pause) => Paused,
            (Paused, Resume) => Running,
            (Ready | Running | Paused | Broken, Stop) => Stopped,
            (Ready | Stopped | Broken, Delete) => self,
            (from, transition) => {
                return Err(TransitionError {
                    what,
                    transition,
                    from,
                })
            }
        };
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [State; 5] = [
        State::Ready,
        State::Running,
        State::Paused,
        State::Stopped,
        State::Broken,
    ];
    const OPS: [Transition; 5] = [
        Transition::Start,
        Transition::Pause,
        Transition::Resume,
        Transition::Stop,
        Transition::Delete,
    ];

    #[test]
    fn the_allowed_transitions() {
        let allowed: Vec<(State, Transition, State)> = ALL
            .iter()
            .flat_map(|s| OPS.iter().map(move |t| (*s, *t)))
            .filter_map(|(s, t)| s.apply("pod", t).ok().map(|n| (s, t, n)))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (State::Ready, Transition::Start, State::Running),
                (State::Ready, Transition::Stop, State::Stopped),
                (State::Ready, Transition::Delete, State::Ready),
                (State::Running, Transition::Pause, State::Paused),
                (State::Running, Transition::Stop, State::Stopped),
                (State::Paused, Transition::Resume, State::Running),
                (State::Paused, Transition::Stop, State::Stopped),
                (State::Stopped, Transition::Delete, State::Stopped),
                (State::Broken, Transition::Stop, State::Stopped),
                (State::Broken, Transition::Delete, State::Broken),
            ]
        );
    }

    #[test]
    fn error_names_both_states() {
        let err = State::Running
            .apply("pod", Transition::Delete)
            .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "cannot delete a pod that is running; it must be ready, stopped or broken"
        );
    }
}
