//! Radau5 tests.
