//! The ustream emulator.
