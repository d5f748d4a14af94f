//! Property and model-based tests of the Boarding protocol core (see `tests/`).
