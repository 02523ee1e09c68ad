//! Evaluation metrics people report for the fine-tuning tasks, computed as the reference tools compute
//! them: scikit-learn's classification metrics ([`classification`]), seqeval's entity-level scores
//! ([`seqeval`]), the official SQuAD evaluation ([`squad`]), and for generated text sacreBLEU's BLEU
//! ([`bleu`]) and chrF ([`chrf`]) and the `bert-score` package's BERTScore ([`bertscore`]).

pub mod bertscore;
pub mod bleu;
pub mod chrf;
pub mod classification;
pub mod seqeval;
pub mod squad;

pub use bertscore::{BertScore, BertScorer};
pub use bleu::{corpus_bleu, sentence_bleu, BleuScore};
pub use chrf::{corpus_chrf, sentence_chrf};
pub use classification::{
    classification_report, multi_label_report, regression_report, ClassScores,
    ClassificationReport, MultiLabelReport, RegressionReport,
};
pub use seqeval::{entity_report, EntityReport};
pub use squad::{squad_report, SquadReport};
