//! Training machinery shared by pretraining and fine-tuning: the optimizer, the learning-rate schedule,
//! gradient accumulation, checkpoints, the output directory and the metrics log.

pub mod checkpoint;
mod fused;
pub mod grads;
pub mod metrics_log;
pub mod optimizer;
pub mod out_dir;
pub mod schedule;

pub use checkpoint::{
    check_same_settings, checkpoints, restore_checkpoint, save_checkpoint, CheckpointParts,
    TrainerState,
};
pub use grads::{accumulate, non_finite, scale, trainable_tensors};
pub use metrics_log::{draw_loss_curve, MetricsLog, StepMetrics};
pub use optimizer::{AdamW, AdamWConfig};
pub use out_dir::OutDir;
pub use schedule::LinearSchedule;
