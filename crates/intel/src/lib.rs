//! Livora's models, trained and run inside the process: customer lifetime value (BG/NBD and
//! Gamma-Gamma), churn, forecasts, recommendations and sentiment.

pub mod churn;
pub mod clv;
pub mod error;
pub mod export;
pub mod forecast;
pub mod history;
pub mod jobs;
pub mod optim;
pub mod recommend;
pub mod send_time;
pub mod sentiment;
pub mod train;

pub use error::Error;
