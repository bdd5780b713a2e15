//! The campfire emulator.
