//! Classification metrics as scikit-learn computes them: accuracy, per-class precision/recall/F1 (0 where
//! undefined, sklearn's `zero_division=0`), macro-F1 over the labels that occur in the truth or the
//! predictions, and the confusion matrix (rows: true label, columns: predicted). Multi-label sets are
//! scored per label and by exact match; regression by mean squared error and Pearson correlation.

use std::collections::BTreeMap;

use serde::Serialize;

/// Precision, recall and F1 of one label, and how often it is the true label.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

impl ClassScores {
    pub fn from_counts(true_positive: usize, predicted: usize, support: usize) -> Self {
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision = ratio(true_positive, predicted);
        let recall = ratio(true_positive, support);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        ClassScores {
            precision,
            recall,
            f1,
            support,
        }
    }
}

/// The scores of a single-label classifier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationReport {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub weighted_f1: f64,
    pub per_class: BTreeMap<String, ClassScores>,
    /// Label names, in index order: the rows and columns of `confusion_matrix`.
    pub labels: Vec<String>,
    /// `confusion_matrix[true][predicted]`.
    pub confusion_matrix: Vec<Vec<usize>>,
}

/// Scores predicted label indices against the true ones.
pub fn classification_report(
    labels: &[String],
    truth: &[usize],
    predicted: &[usize],
) -> ClassificationReport {
    let k = labels.len();
    let mut matrix = vec![vec![0usize; k]; k];
    for (&t, &p) in truth.iter().zip(predicted) {
        matrix[t][p] += 1;
    }
    let correct: usize = (0..k).map(|i| matrix[i][i]).sum();
    let scores: Vec<ClassScores> = (0..k)
        .map(|i| {
            let support = matrix[i].iter().sum();
            let predicted = matrix.iter().map(|row| row[i]).sum();
            ClassScores::from_counts(matrix[i][i], predicted, support)
        })
        .collect();
    let present: Vec<&ClassScores> = (0..k)
        .filter(|&i| scores[i].support > 0 || matrix.iter().any(|row| row[i] > 0))
        .map(|i| &scores[i])
        .collect();
    let total = truth.len().max(1) as f64;
    ClassificationReport {
        accuracy: correct as f64 / total,
        macro_f1: present.iter().map(|s| s.f1).sum::<f64>() / present.len().max(1) as f64,
        weighted_f1: scores.iter().map(|s| s.f1 * s.support as f64).sum::<f64>() / total,
        per_class: labels.iter().cloned().zip(scores).collect(),
        labels: labels.to_vec(),
        confusion_matrix: matrix,
    }
}

/// The scores of a multi-label classifier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MultiLabelReport {
    /// Exact-match ratio: every label of a text right.
    pub accuracy: f64,
    pub micro_f1: f64,
    pub macro_f1: f64,
    pub per_class: BTreeMap<String, ClassScores>,
}

/// Scores multi-hot predictions (`predicted[i][label]`) against multi-hot truth.
pub fn multi_label_report(
    labels: &[String],
    truth: &[Vec<bool>],
    predicted: &[Vec<bool>],
) -> MultiLabelReport {
    let mut per_class = BTreeMap::new();
    let (mut tp_all, mut predicted_all, mut support_all) = (0, 0, 0);
    let mut f1s = Vec::new();
    for (j, label) in labels.iter().enumerate() {
        let pairs = truth.iter().zip(predicted).map(|(t, p)| (t[j], p[j]));
        let (mut tp, mut pred, mut support) = (0, 0, 0);
        for (t, p) in pairs {
            tp += usize::from(t && p);
            pred += usize::from(p);
            support += usize::from(t);
        }
        let scores = ClassScores::from_counts(tp, pred, support);
        f1s.push(scores.f1);
        per_class.insert(label.clone(), scores);
        (tp_all, predicted_all, support_all) =
            (tp_all + tp, predicted_all + pred, support_all + support);
    }
    let exact = truth.iter().zip(predicted).filter(|(t, p)| t == p).count();
    MultiLabelReport {
        accuracy: exact as f64 / truth.len().max(1) as f64,
        micro_f1: ClassScores::from_counts(tp_all, predicted_all, support_all).f1,
        macro_f1: f1s.iter().sum::<f64>() / f1s.len().max(1) as f64,
        per_class,
    }
}

/// The scores of a regression head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RegressionReport {
    pub mse: f64,
    pub pearson: f64,
}

/// Mean squared error and Pearson correlation (0 when either side is constant).
pub fn regression_report(truth: &[f64], predicted: &[f64]) -> RegressionReport {
    let n = truth.len().max(1) as f64;
    let mse = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).powi(2))
        .sum::<f64>()
        / n;
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / n;
    let (mt, mp) = (mean(truth), mean(predicted));
    let (mut cov, mut vt, mut vp) = (0.0, 0.0, 0.0);
    for (t, p) in truth.iter().zip(predicted) {
        cov += (t - mt) * (p - mp);
        vt += (t - mt).powi(2);
        vp += (p - mp).powi(2);
    }
    let pearson = if vt == 0.0 || vp == 0.0 {
        0.0
    } else {
        cov / (vt * vp).sqrt()
    };
    RegressionReport { mse, pearson }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    /// Expected values from scikit-learn 1.9.1: `classification_report(y_true, y_pred)`,
    /// `f1_score(average="macro")`, `confusion_matrix` for
    /// y_true = [0, 0, 1, 1, 2, 2, 2], y_pred = [0, 1, 1, 1, 2, 0, 1].
    #[test]
    fn matches_scikit_learn() {
        let r = classification_report(
            &names(&["a", "b", "c"]),
            &[0, 0, 1, 1, 2, 2, 2],
            &[0, 1, 1, 1, 2, 0, 1],
        );
        assert!((r.accuracy - 4.0 / 7.0).abs() < 1e-12);
        assert_eq!(
            r.confusion_matrix,
            vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 1, 1]]
        );
        let b = r.per_class["b"];
        assert!((b.precision - 0.5).abs() < 1e-12 && (b.recall - 1.0).abs() < 1e-12);
        assert!((b.f1 - 2.0 / 3.0).abs() < 1e-12);
        let c = r.per_class["c"];
        assert!((c.precision - 1.0).abs() < 1e-12 && (c.f1 - 0.5).abs() < 1e-12);
        // f1: a 0.5, b 0.6667, c 0.5
        assert!((r.macro_f1 - (0.5 + 2.0 / 3.0 + 0.5) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn labels_absent_from_truth_and_predictions_do_not_count_in_macro_f1() {
        let r = classification_report(&names(&["a", "b", "unused"]), &[0, 1], &[0, 1]);
        assert_eq!(r.macro_f1, 1.0);
        assert_eq!(r.per_class["unused"].f1, 0.0);
    }

    #[test]
    fn multi_label_and_regression() {
        let t = vec![vec![true, false], vec![true, true]];
        let p = vec![vec![true, false], vec![false, true]];
        let r = multi_label_report(&names(&["x", "y"]), &t, &p);
        assert_eq!(r.accuracy, 0.5);
        // tp 2, predicted 2, support 3: P 1, R 2/3, F1 0.8
        assert!((r.micro_f1 - 0.8).abs() < 1e-12);
        let g = regression_report(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]);
        assert!((g.pearson - 1.0).abs() < 1e-12);
        assert!((g.mse - 14.0 / 3.0).abs() < 1e-12);
    }
}
