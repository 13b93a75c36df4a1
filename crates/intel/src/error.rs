//! The errors of `livora-intel`: training options out of range, a full training queue.

/// What the models cannot do as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("window_days {0}: between {min} and {max} days", min = crate::train::WINDOW_DAYS.0, max = crate::train::WINDOW_DAYS.1)]
    WindowDays(u32),
    #[error("horizon_days {0}: between {min} and {max} days", min = crate::train::HORIZON_DAYS.0, max = crate::train::HORIZON_DAYS.1)]
    HorizonDays(u32),
    #[error(
        "horizon_days {horizon} must be at most half of window_days {window}: the lifetime-value model is fitted on the window before the horizon and judged on the horizon"
    )]
    HorizonTooLong { horizon: u32, window: u32 },
    #[error("{0} trainings are already queued for this tenant: wait for one to finish")]
    QueueFull(usize),
}
