//! The per-disease report of a ChestX-ray8 evaluation, as the paper's Fig. 11 reports it: for each
//! disease the number of images, mean ± std (ddof 0) of the AUC-PR of the finetuned model and of the
//! baseline, and their difference; average precision (the primary figure) and the authors' curve side
//! by side. Written as Markdown, CSV and JSON.
use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::metrics::{AucPr, Summary};
use crate::error::{Error, Result};

/// The figures of one image and disease.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageResult {
    pub image: String,
    pub disease: String,
    /// None when no pixel centre lies inside the boxes at the working size.
    pub finetuned: Option<AucPr>,
    pub baseline: Option<AucPr>,
}

/// Mean ± std of one model's figures over a disease's images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModelFigures {
    pub average_precision: Summary,
    pub authors_area: Summary,
}

impl ModelFigures {
    fn of(results: &[AucPr]) -> Option<Self> {
        let ap: Vec<f64> = results.iter().map(|r| r.average_precision).collect();
        let area: Vec<f64> = results.iter().map(|r| r.authors_area).collect();
        Some(ModelFigures { average_precision: Summary::of(&ap)?, authors_area: Summary::of(&area)? })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiseaseRow {
    pub disease: String,
    /// Images (with boxes for the disease) that have a figure for every model evaluated.
    pub images: usize,
    /// Images skipped because no pixel centre lies inside their boxes at the working size.
    pub skipped: usize,
    pub finetuned: Option<ModelFigures>,
    pub baseline: Option<ModelFigures>,
    /// Finetuned minus baseline mean average precision.
    pub difference: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub rows: Vec<DiseaseRow>,
    /// The mean over diseases of the per-disease mean average precision, as the paper averages.
    pub average_finetuned: Option<f64>,
    pub average_baseline: Option<f64>,
}

impl Report {
    pub fn from_results(results: &[ImageResult]) -> Self {
        let mut by_disease: BTreeMap<&str, Vec<&ImageResult>> = BTreeMap::new();
        for r in results {
            by_disease.entry(&r.disease).or_default().push(r);
        }
        let rows: Vec<DiseaseRow> = by_disease.into_iter().map(|(disease, results)| disease_row(disease, &results)).collect();
        let mean_of = |pick: fn(&DiseaseRow) -> Option<f64>| {
            let means: Vec<f64> = rows.iter().filter_map(pick).collect();
            Summary::of(&means).map(|s| s.mean)
        };
        Report {
            average_finetuned: mean_of(|r| r.finetuned.map(|f| f.average_precision.mean)),
            average_baseline: mean_of(|r| r.baseline.map(|f| f.average_precision.mean)),
            rows,
        }
    }

    pub fn markdown(&self) -> String {
        let pct = |s: Option<Summary>| s.map_or("–".to_string(), |s| format!("{:.1} ± {:.1}", 100.0 * s.mean, 100.0 * s.std));
        let mut text = String::from(
            "| Disease | Images | AP finetuned (%) | AP baseline (%) | Δ AP (points) | Authors' AUC finetuned (%) | Authors' AUC baseline (%) |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
        );
        for row in &self.rows {
            text.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                row.disease,
                row.images,
                pct(row.finetuned.map(|f| f.average_precision)),
                pct(row.baseline.map(|f| f.average_precision)),
                row.difference.map_or("–".into(), |d| format!("{:+.1}", 100.0 * d)),
                pct(row.finetuned.map(|f| f.authors_area)),
                pct(row.baseline.map(|f| f.authors_area)),
            ));
        }
        let avg = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.1}", 100.0 * v));
        text.push_str(&format!("| Average of diseases | | {} | {} | | | |\n", avg(self.average_finetuned), avg(self.average_baseline)));
        let skipped: usize = self.rows.iter().map(|r| r.skipped).sum();
        text.push_str(&format!(
            "\nAP: average precision (scikit-learn's definition), the primary figure. Authors' AUC: trapezoidal area under \
             the precision–recall curve at thresholds 2·10^-s, s in [2, 7]. Mean ± std over images (ddof 0). \
             {skipped} image–disease pairs skipped (no pixel centre inside the boxes).\n"
        ));
        text
    }

    pub fn csv(&self) -> String {
        let mut text = String::from("disease,images,skipped,ap_finetuned_mean,ap_finetuned_std,ap_baseline_mean,ap_baseline_std,ap_difference,authors_finetuned_mean,authors_finetuned_std,authors_baseline_mean,authors_baseline_std\n");
        let pair = |s: Option<Summary>| s.map_or(",".to_string(), |s| format!("{},{}", s.mean, s.std));
        for row in &self.rows {
            text.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                row.disease,
                row.images,
                row.skipped,
                pair(row.finetuned.map(|f| f.average_precision)),
                pair(row.baseline.map(|f| f.average_precision)),
                row.difference.map_or(String::new(), |d| d.to_string()),
                pair(row.finetuned.map(|f| f.authors_area)),
                pair(row.baseline.map(|f| f.authors_area)),
            ));
        }
        text
    }

    /// Writes `report.md`, `report.csv` and `report.json` (the report and every image's figures).
    pub fn write(&self, results: &[ImageResult], dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = serde_json::json!({ "report": self, "images": results });
        let json = serde_json::to_string_pretty(&json).map_err(|e| Error::InvalidArgument(format!("report JSON: {e}")))?;
        for (name, text) in [("report.md", self.markdown()), ("report.csv", self.csv()), ("report.json", json)] {
            let path = dir.join(name);
            crate::io::write_atomic(&path, text.as_bytes())?;
        }
        Ok(())
    }
}

fn disease_row(disease: &str, results: &[&ImageResult]) -> DiseaseRow {
    let has_baseline = results.iter().any(|r| r.baseline.is_some());
    // An image counts when every evaluated model has a figure for it, so both means are over the
    // same images.
    let complete: Vec<&&ImageResult> = results.iter().filter(|r| r.finetuned.is_some() && (!has_baseline || r.baseline.is_some())).collect();
    let finetuned = ModelFigures::of(&complete.iter().filter_map(|r| r.finetuned).collect::<Vec<_>>());
    let baseline = ModelFigures::of(&complete.iter().filter_map(|r| r.baseline).collect::<Vec<_>>());
    let difference = match (finetuned, baseline) {
        (Some(f), Some(b)) => Some(f.average_precision.mean - b.average_precision.mean),
        _ => None,
    };
    DiseaseRow { disease: disease.to_string(), images: complete.len(), skipped: results.len() - complete.len(), finetuned, baseline, difference }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(disease: &str, ft: f64, pt: Option<f64>) -> ImageResult {
        let figures = |v: f64| AucPr { average_precision: v, authors_area: v / 2.0 };
        ImageResult { image: "x.png".into(), disease: disease.into(), finetuned: Some(figures(ft)), baseline: pt.map(figures) }
    }

    #[test]
    fn rows_average_per_disease_and_skip_incomplete_images() {
        let results = [
            result("Mass", 0.2, Some(0.1)),
            result("Mass", 0.4, Some(0.1)),
            result("Nodule", 0.1, Some(0.3)),
            ImageResult { image: "y.png".into(), disease: "Nodule".into(), finetuned: None, baseline: None },
        ];
        let report = Report::from_results(&results);
        let mass = &report.rows[0];
        assert_eq!((mass.disease.as_str(), mass.images, mass.skipped), ("Mass", 2, 0));
        let ft = mass.finetuned.unwrap().average_precision;
        assert!((ft.mean - 0.3).abs() < 1e-12 && (ft.std - 0.1).abs() < 1e-12);
        assert!((mass.difference.unwrap() - 0.2).abs() < 1e-12);
        assert_eq!((report.rows[1].images, report.rows[1].skipped), (1, 1));
        assert!((report.average_finetuned.unwrap() - 0.2).abs() < 1e-12);
        assert!(report.markdown().contains("| Mass | 2 | 30.0 ± 10.0 | 10.0 ± 0.0 | +20.0 |"));
        assert_eq!(report.csv().lines().count(), 3);
    }
}
