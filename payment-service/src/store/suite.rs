//! The storage test suite every [`Store`](super::Store) implementation must pass.
//! Each function takes a fresh, empty store and panics on a failed expectation.
