//! The flowdock emulator.
