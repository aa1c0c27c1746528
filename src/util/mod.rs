//! Leaf helpers every step may use: durations as people write and read them, tool-id
//! globs (and whether two overlap), canonical JSON numbers, and the clock. Nothing here
//! imports another mcpd module, so no step has to import another step to reach a helper.

pub mod clock;
pub mod duration;
pub mod glob;
pub mod number;
pub mod par;

pub use clock::Clock;
pub use glob::{glob, overlap};
pub use number::canonical_numbers;
