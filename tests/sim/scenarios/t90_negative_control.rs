//! The negative control: a run whose network faults come from the operating system instead of
//! the seed must diverge from another such run. If it did not, the fingerprints could not tell
//! two different histories apart and the determinism checks would prove nothing.

use crate::scenarios::t10_elections;
use crate::world::{run_one, Entropy};

#[test]
fn t90_os_entropy_diverges() {
    let a = run_one(1, Entropy::Os, &t10_elections::scenario);
    let b = run_one(1, Entropy::Os, &t10_elections::scenario);
    assert_ne!(
        a.fingerprint, b.fingerprint,
        "two runs fed OS entropy produced the same trace ({} events); the fingerprint does not \
         capture the history",
        a.events
    );
    let seeded = run_one(1, Entropy::Seeded, &t10_elections::scenario);
    let again = run_one(1, Entropy::Seeded, &t10_elections::scenario);
    assert_eq!(
        seeded.fingerprint, again.fingerprint,
        "the seeded control run diverged"
    );
}
