//! Evaluation metrics people report for the fine-tuning tasks, computed as the reference tools compute
//! them: scikit-learn's classification metrics ([`classification`]).

pub mod classification;

pub use classification::{
    classification_report, multi_label_report, regression_report, ClassScores,
    ClassificationReport, MultiLabelReport, RegressionReport,
};
