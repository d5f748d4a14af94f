//! Boarding over TCP and TLS 1.3 (work in progress).
