//! The streamin emulator.
