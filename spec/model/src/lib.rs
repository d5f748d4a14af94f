//! Exhaustive model check of the abstract Boarding protocol (work in progress).
