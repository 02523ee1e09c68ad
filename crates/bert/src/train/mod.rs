//! Training: the one loop ([`trainer`]) that pretraining and every fine-tuning task run on, each a
//! [`Task`]; its settings ([`options`]); and what it is made of: the optimizer, the learning-rate
//! schedule, gradient accumulation, checkpoints, the output directory, the metrics log, and the ranks
//! of a data-parallel run with their gradient exchange.

pub mod checkpoint;
pub mod exchange;
mod fused;
pub mod grads;
pub mod metrics_log;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod optimizer;
pub mod options;
pub mod out_dir;
pub mod schedule;
pub mod shards;
pub mod task;
pub mod trainer;
pub mod world;

pub use checkpoint::{
    check_same_settings, checkpoints, restore_checkpoint, save_checkpoint, CheckpointParts,
    TrainerState,
};
pub use grads::{non_finite, trainable_tensors, GradientSum};
pub use metrics_log::{draw_loss_curve, MetricsLog, StepMetrics};
pub use optimizer::{AdamW, AdamWConfig};
pub use options::{EvalStrategy, TrainingOptions};
pub use out_dir::OutDir;
pub use schedule::LinearSchedule;
pub use task::{EvalBatch, Evaluated, Task, TrainLoss};
pub use trainer::{evaluate, train, Event, Outcome};
pub use world::World;
