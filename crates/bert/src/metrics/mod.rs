//! Evaluation metrics people report for the fine-tuning tasks, computed as the reference tools compute
//! them: scikit-learn's classification metrics ([`classification`]), seqeval's entity-level scores
//! ([`seqeval`]) and the official SQuAD evaluation ([`squad`]).

pub mod classification;
pub mod seqeval;
pub mod squad;

pub use classification::{
    classification_report, multi_label_report, regression_report, ClassScores,
    ClassificationReport, MultiLabelReport, RegressionReport,
};
pub use seqeval::{entity_report, EntityReport};
pub use squad::{squad_report, SquadReport};
