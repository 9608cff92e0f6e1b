//! GIMPS-style gossip: every node searches for the next Mersenne prime, announces finds with a
//! TTL, forwards what it hears, pings its peers and evicts silent ones, and everyone agrees on
//! who found the largest prime. Modelled on the classic P2P teaching exercise; see [`node`] for
//! the rules, [`message`] for the wire format, [`lucas_lehmer`] for the primality test, [`pace`]
//! for the share of a core it may take and [`sim`] for a deterministic many-node simulation.

#[cfg(feature = "fft")]
mod fft_square;
pub mod lucas_lehmer;
pub mod message;
pub mod node;
pub mod pace;
pub mod sim;

#[cfg(test)]
mod tests;
