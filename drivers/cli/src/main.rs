//! The `boarding` command (work in progress).

fn main() {}
