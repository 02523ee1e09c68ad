//! Training machinery shared by pretraining and fine-tuning: the optimizer and the learning-rate
//! schedule.

pub mod optimizer;
pub mod schedule;

pub use optimizer::{AdamW, AdamWConfig};
pub use schedule::LinearSchedule;
