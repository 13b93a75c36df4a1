//! Send-time optimisation: the hour of the day at which a person is likeliest to engage
//! (open, click, reply, buy), from the hours of their own engagements in their time zone,
//! pulled towards the tenant's hours when they have few.
//!
//! Each engagement counts at its hour and, half as much, at the hours either side (people
//! who open at 8:55 also open at 9:05), on a circle (23 h neighbours 0 h). The person's
//! counts are added to the tenant's distribution weighted as `PRIOR` engagements, so a
//! person with two opens mostly gets the tenant's best hour and one with fifty their own.

use serde::{Deserialize, Serialize};

/// How many engagements the tenant's distribution weighs as.
pub const PRIOR: f64 = 5.0;

/// A distribution of engagements over the 24 hours of the day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hours(pub [f64; 24]);

impl Default for Hours {
    fn default() -> Self {
        Self([0.0; 24])
    }
}

impl Hours {
    /// Counts engagements at `hours` (0-23; others are ignored), smoothed over neighbours.
    pub fn of(hours: impl IntoIterator<Item = u8>) -> Self {
        let mut h = [0.0; 24];
        for hour in hours.into_iter().filter(|&h| h < 24) {
            let i = usize::from(hour);
            h[i] += 1.0;
            h[(i + 1) % 24] += 0.5;
            h[(i + 23) % 24] += 0.5;
        }
        Self(h)
    }

    /// The number of engagements counted (smoothing adds one per engagement, so halve).
    pub fn total(&self) -> f64 {
        self.0.iter().sum::<f64>() / 2.0
    }

    /// Shares summing to 1 (uniform when empty).
    pub fn shares(&self) -> [f64; 24] {
        let s: f64 = self.0.iter().sum();
        if s <= 0.0 {
            return [1.0 / 24.0; 24];
        }
        self.0.map(|v| v / s)
    }
}

/// A person's best hour, and the share of their (blended) engagements at it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BestTime {
    pub hour: u8,
    pub share: f64,
    /// How many of the person's own engagements it rests on.
    pub engagements: u32,
    /// `false`: the tenant's best hour (the person has none of their own).
    pub personal: bool,
}

/// The best hour for a person with engagements `person`, given the tenant's `tenant`.
pub fn best_hour(person: &Hours, tenant: &Hours) -> BestTime {
    let own = person.total();
    let prior = tenant.shares();
    let mut blended = [0.0; 24];
    for (i, b) in blended.iter_mut().enumerate() {
        *b = person.0[i] / 2.0 + PRIOR * prior[i];
    }
    let total: f64 = blended.iter().sum();
    // The earliest of equal hours.
    let (hour, top) =
        blended.iter().enumerate().fold(
            (0, f64::MIN),
            |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
        );
    BestTime {
        hour: hour as u8,
        share: if total > 0.0 { top / total } else { 0.0 },
        engagements: own.round() as u32,
        personal: own > 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_with_a_habit_gets_their_hour_and_a_newcomer_the_tenants() {
        let tenant = Hours::of((0..200).map(|i| if i % 4 == 0 { 20 } else { 9 }));
        let newcomer = best_hour(&Hours::default(), &tenant);
        assert_eq!((newcomer.hour, newcomer.personal), (9, false));
        let night_owl = Hours::of(std::iter::repeat_n(22u8, 30).chain([23, 21]));
        assert_eq!(best_hour(&night_owl, &tenant).hour, 22);
        // Two opens at 6 do not outweigh the tenant yet.
        let early = Hours::of([6, 6]);
        assert_eq!(best_hour(&early, &tenant).hour, 9);
        assert_eq!(best_hour(&early, &tenant).engagements, 2);
        // Midnight's neighbours wrap around.
        let late = Hours::of([23, 0, 0, 1]);
        assert_eq!(best_hour(&late, &Hours::default()).hour, 0);
        assert!((Hours::of([3, 30]).total() - 1.0).abs() < 1e-12);
    }
}
