//! The payment order state machine.
//!
//! | from              | event             | to                |
//! |-------------------|-------------------|-------------------|
//! | Created           | PrepayAccepted    | Pending           |
//! | Created           | PrepayDeclined    | Failed            |
//! | Created, Pending  | Closed            | Closed            |
//! | Pending           | PaidConfirmed     | Succeeded         |
//! | Pending           | AmountMismatch    | Exception         |
//! | Succeeded         | PartlyRefunded    | PartiallyRefunded |
//! | PartiallyRefunded | PartlyRefunded    | PartiallyRefunded |
//! | Succeeded, PartiallyRefunded | FullyRefunded | Refunded   |
//! | Exception         | OperatorAccepted  | Succeeded         |
//! | Exception         | FullyRefunded     | Refunded          |
//!
//! Everything else is illegal. `Failed`, `Closed` and `Refunded` are final: a payment that
//! arrives after `Closed` is refunded without reopening the order.

use payflow_client::PayState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayEvent {
    PrepayAccepted,
    PrepayDeclined,
    Closed,
    PaidConfirmed,
    AmountMismatch,
    PartlyRefunded,
    FullyRefunded,
    OperatorAccepted,
}

impl PayEvent {
    pub const ALL: [PayEvent; 8] = [
        PayEvent::PrepayAccepted,
        PayEvent::PrepayDeclined,
        PayEvent::Closed,
        PayEvent::PaidConfirmed,
        PayEvent::AmountMismatch,
        PayEvent::PartlyRefunded,
        PayEvent::FullyRefunded,
        PayEvent::OperatorAccepted,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal payment transition: {event:?} in state {from}")]
pub struct IllegalTransition {
    pub from: PayState,
    pub event: PayEvent,
}

pub fn transition(from: PayState, event: PayEvent) -> Result<PayState, IllegalTransition> {
    use PayEvent as E;
    use PayState as S;
    let to = match (from, event) {
        (S::Created, E::PrepayAccepted) => S::Pending,
        (S::Created, E::PrepayDeclined) => S::Failed,
        (S::Created | S::Pending, E::Closed) => S::Closed,
        (S::Pending, E::PaidConfirmed) => S::Succeeded,
        (S::Pending, E::AmountMismatch) => S::Exception,
        (S::Succeeded | S::PartiallyRefunded, E::PartlyRefunded) => S::PartiallyRefunded,
        (S::Succeeded | S::PartiallyRefunded | S::Exception, E::FullyRefunded) => S::Refunded,
        (S::Exception, E::OperatorAccepted) => S::Succeeded,
        _ => return Err(IllegalTransition { from, event }),
    };
    Ok(to)
}

pub fn is_final(state: PayState) -> bool {
    matches!(
        state,
        PayState::Failed | PayState::Closed | PayState::Refunded
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn happy_path() {
        let s = transition(PayState::Created, PayEvent::PrepayAccepted).unwrap();
        let s = transition(s, PayEvent::PaidConfirmed).unwrap();
        assert_eq!(s, PayState::Succeeded);
        let s = transition(s, PayEvent::PartlyRefunded).unwrap();
        assert_eq!(
            transition(s, PayEvent::FullyRefunded).unwrap(),
            PayState::Refunded
        );
    }

    #[test]
    fn closed_never_becomes_paid() {
        assert!(transition(PayState::Closed, PayEvent::PaidConfirmed).is_err());
        assert!(transition(PayState::Failed, PayEvent::PrepayAccepted).is_err());
        assert!(transition(PayState::Created, PayEvent::PaidConfirmed).is_err());
    }

    fn any_event() -> impl Strategy<Value = PayEvent> {
        proptest::sample::select(PayEvent::ALL.to_vec())
    }

    proptest! {
        /// From `Created`, any sequence of events (illegal ones refused) never leaves a final
        /// state, never pays a closed or failed order, and reaches `Refunded` only through a
        /// payment.
        #[test]
        fn no_illegal_transition_is_reachable(events in proptest::collection::vec(any_event(), 0..40)) {
            let mut state = PayState::Created;
            let mut was_paid = false;
            for e in events {
                match transition(state, e) {
                    Ok(next) => {
                        prop_assert!(!is_final(state), "left final state {state}");
                        if next == PayState::Succeeded || next == PayState::Exception {
                            was_paid = true;
                        }
                        if next == PayState::Refunded || next == PayState::PartiallyRefunded {
                            prop_assert!(was_paid);
                        }
                        state = next;
                    }
                    Err(err) => prop_assert_eq!(err.from, state),
                }
            }
        }
    }
}
