//! The scenarios of the benchmark issue, one module each. Each takes the running
//! [`crate::stack::Stack`] and the run's [`crate::Mode`] and returns a report section.

pub mod console;
pub mod create;
pub mod delivery;
pub mod micro;
pub mod notify;
pub mod streams;

/// A prefix unique to this run and scenario, so seeded order numbers never collide.
pub fn prefix(tag: &str) -> String {
    let run = ulid::Ulid::new().to_string();
    // The ULID's random tail: order numbers stay short (≤ 32) and distinct per call.
    format!("{tag}{}", &run[18..])
}
