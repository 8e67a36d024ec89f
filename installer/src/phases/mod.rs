//! Install phases, in order.
