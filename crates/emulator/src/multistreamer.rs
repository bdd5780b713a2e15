//! The multistreamer emulator.
