//! Pure state machines, one per business noun, each opening with its transition table and
//! tested without the SDK. The store mirrors them with compare-and-set.

pub mod payment;
