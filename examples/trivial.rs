//! The cheapest Rust process, for `make bench`: the cache-hit target is measured against it.
fn main() {}
