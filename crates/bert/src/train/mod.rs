//! Training machinery shared by pretraining and fine-tuning: the optimizer and the learning-rate
//! schedule.

pub mod checkpoint;
pub mod optimizer;
pub mod schedule;

pub use checkpoint::{
    checkpoints, restore_checkpoint, save_checkpoint, CheckpointParts, TrainerState,
};
pub use optimizer::{AdamW, AdamWConfig};
pub use schedule::LinearSchedule;
