//! Evaluation metrics people report for the fine-tuning tasks, computed as the reference tools compute
//! them: scikit-learn's classification metrics ([`classification`]) and seqeval's entity-level scores
//! ([`seqeval`]).

pub mod classification;
pub mod seqeval;

pub use classification::{
    classification_report, multi_label_report, regression_report, ClassScores,
    ClassificationReport, MultiLabelReport, RegressionReport,
};
pub use seqeval::{entity_report, EntityReport};
