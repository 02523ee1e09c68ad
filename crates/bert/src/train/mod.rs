//! Training machinery shared by pretraining and fine-tuning: the optimizer, the learning-rate schedule,
//! gradient accumulation, checkpoints, the output directory, the metrics log, and the ranks of a
//! data-parallel run with their gradient exchange.

pub mod checkpoint;
pub mod exchange;
mod fused;
pub mod grads;
pub mod metrics_log;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod optimizer;
pub mod out_dir;
pub mod schedule;
pub mod shards;
pub mod world;

pub use checkpoint::{
    check_same_settings, checkpoints, restore_checkpoint, save_checkpoint, CheckpointParts,
    TrainerState,
};
pub use grads::{non_finite, trainable_tensors, GradientSum};
pub use metrics_log::{draw_loss_curve, MetricsLog, StepMetrics};
pub use optimizer::{AdamW, AdamWConfig};
pub use out_dir::OutDir;
pub use schedule::LinearSchedule;
pub use world::World;
