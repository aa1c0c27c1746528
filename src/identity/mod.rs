//! Identity: who calls (the typed actor), short-lived tokens, scopes, and just-in-time
//! elevation grants.
//!
//! Owns proving and describing the caller. It never decides policy: the engine checks
//! the actor's scopes, then policy rules read the actor.

pub mod elevation;
pub mod token;

pub use token::*;
